"""Bundle verification on trees with subdirectories and every kind of bad entry, the path
grammar at its edges, and the manifest/signature files themselves. Each case is something an
attacker who controls a cache directory or a registry answer could try."""

from __future__ import annotations

import os

import msgspec
import pytest

from artifacts.bundle import check_named_files, check_relpath, verify_bundle, write_bundle
from artifacts.errors import (
    BadSignatureError,
    BundleError,
    MissingFileError,
    MissingSignatureError,
    SignatureError,
    UnlistedFileError,
    UnsafePathError,
)
from artifacts.manifest import (
    LEGACY_SIGNATURE_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    encode,
)
from artifacts.signing import SigningKey
from tests.factories import make_manifest


@pytest.fixture
def nested(tmp_path, key):
    """A bundle with files at the top and in subdirectories (like an OpenVINO IR + tokenizer)."""
    dest = tmp_path / "bundle"
    write_bundle(
        dest,
        make_manifest("onnx-fp32"),
        {
            "model.onnx": b"weights" * 100,
            "tok/tokenizer.json": b"{}",
            "tok/extra/vocab.txt": b"a\nb\n",
            "tokenizer.json": b'{"tok": 1}',
            "golden.npz": b"golden",
        },
        key=key,
    )
    return dest


def test_a_nested_bundle_verifies(nested, trusted):
    v = verify_bundle(nested, trusted)
    assert sorted(f.path for f in v.manifest.files) == [
        "golden.npz", "model.onnx", "tok/extra/vocab.txt", "tok/tokenizer.json", "tokenizer.json",
    ]  # fmt: skip


@pytest.mark.parametrize("where", ["evil.so", "tok/evil.so", "tok/extra/evil.so", "zz/evil.so"])
def test_an_unlisted_file_anywhere_in_the_tree_is_refused(nested, trusted, where):
    (nested / where).parent.mkdir(parents=True, exist_ok=True)
    (nested / where).write_bytes(b"\x7fELF")
    with pytest.raises(UnlistedFileError, match="evil.so"):
        verify_bundle(nested, trusted)


def test_a_file_beside_a_subdirectory_is_checked_whatever_the_walk_order(nested, trusted):
    # names chosen so the directory sorts and lists before and after the stray file
    for name in ("0-first.bin", "zz-last.bin"):
        stray = nested / name
        stray.write_bytes(b"x")
        with pytest.raises(UnlistedFileError):
            verify_bundle(nested, trusted)
        stray.unlink()
    verify_bundle(nested, trusted)


@pytest.mark.parametrize("where", ["fifo", "tok/fifo"])
def test_special_files_are_refused(nested, trusted, where):
    os.mkfifo(nested / where)
    with pytest.raises(UnsafePathError, match="special file"):
        verify_bundle(nested, trusted)


def test_a_symlinked_subdirectory_is_refused(nested, trusted, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", nested / "tok" / "linked")
    with pytest.raises(UnsafePathError, match="symlink"):
        verify_bundle(nested, trusted)


def test_a_missing_or_symlinked_or_special_manifest_is_refused(nested, trusted, tmp_path):
    data = (nested / MANIFEST_FILE).read_bytes()
    (nested / MANIFEST_FILE).unlink()
    with pytest.raises(MissingFileError, match=MANIFEST_FILE):
        verify_bundle(nested, trusted)
    (tmp_path / "m.json").write_bytes(data)
    os.symlink(tmp_path / "m.json", nested / MANIFEST_FILE)
    with pytest.raises(UnsafePathError, match="symlink"):
        verify_bundle(nested, trusted)
    (nested / MANIFEST_FILE).unlink()
    (nested / MANIFEST_FILE).mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        verify_bundle(nested, trusted)


def test_a_signature_that_is_a_symlink_or_missing_is_refused(nested, trusted, tmp_path):
    sig = nested / SIGNATURE_FILE
    (tmp_path / "sig").write_bytes(sig.read_bytes())
    sig.unlink()
    with pytest.raises(MissingSignatureError):
        verify_bundle(nested, trusted)
    verify_bundle(nested, None)  # integrity only: fine without it
    os.symlink(tmp_path / "sig", sig)
    with pytest.raises(UnsafePathError, match="symlink"):
        verify_bundle(nested, trusted)


def test_a_legacy_signature_alone_is_refused_with_the_way_out(nested, trusted):
    (nested / SIGNATURE_FILE).rename(nested / LEGACY_SIGNATURE_FILE)
    with pytest.raises(SignatureError, match="pre-OMS format"):
        verify_bundle(nested, trusted)


def test_a_manifest_naming_another_signer_is_refused(tmp_path, key, trusted):
    other = SigningKey.generate()
    trusted.add(other.public_key)
    dest = write_bundle(tmp_path / "b", make_manifest(), {"model.onnx": b"m", "tokenizer.json": b"{}", "golden.npz": b"g"}, key=key)  # fmt: skip
    assert dest.signing_key_id == key.key_id
    # re-sign the same manifest with the other (also trusted) key: the manifest names key
    from artifacts import oms

    oms.sign_directory(tmp_path / "b", other)
    with pytest.raises(BadSignatureError, match="names signer"):
        verify_bundle(tmp_path / "b", trusted)


def test_a_file_listed_twice_is_refused(nested, trusted):
    m = msgspec.json.decode((nested / MANIFEST_FILE).read_bytes())
    m["files"].append(dict(m["files"][0]))
    (nested / MANIFEST_FILE).write_bytes(msgspec.json.encode(m))
    with pytest.raises(BundleError, match="twice"):
        verify_bundle(nested, None)


# ---- the path grammar at its edges --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "a/b/c/d",
        "_x",
        "a" * 128,
        "v1.2-rc_3.onnx",
        "tok/extra/vocab.txt",
    ],
)
def test_safe_paths(path):
    assert check_relpath(path) == path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("a/b/c/d/e", "too deep"),
        ("a" * 129, "unsafe characters"),
        ("model onnx;rm -rf", "unsafe characters"),
        ("model.onnx\n", "unsafe characters"),
        ("model.onnx;", "unsafe characters"),
        (".hidden", "unsafe characters"),
        ("-rf", "unsafe characters"),
        ("a//b", "not normalised"),
        ("a/./b", "not normalised"),
        ("a/../b", "not normalised"),
        ("a/", "not normalised"),
        ("/etc/passwd", "absolute"),
        ("a\\b", "backslash"),
        ("a\0b", "NUL"),
        ("", "empty"),
        (7, "not a string"),
        (MANIFEST_FILE, "reserved"),
        (SIGNATURE_FILE, "reserved"),
        (LEGACY_SIGNATURE_FILE, "reserved"),
    ],
)
def test_unsafe_paths(path, why):
    with pytest.raises(UnsafePathError, match=why):
        check_relpath(path)


def test_named_tokenizer_and_golden_files_go_through_the_same_checks():
    m = make_manifest()
    bad = msgspec.structs.replace(m, golden=msgspec.structs.replace(m.golden, file="../g.npz"))
    with pytest.raises(UnsafePathError):
        check_named_files(bad)
    bad = msgspec.structs.replace(m, tokenizer=msgspec.structs.replace(m.tokenizer, file="/t"))
    with pytest.raises(UnsafePathError):
        check_named_files(bad)


def test_the_writer_refuses_what_the_verifier_would(tmp_path, key):
    for bad in ("a/b/c/d/e", "x;y", MANIFEST_FILE):
        with pytest.raises(UnsafePathError):
            write_bundle(tmp_path / "w", make_manifest(), {bad: b"x"}, key=key)
        assert not (tmp_path / "w").exists()
    entry = FileEntry(path="a", sha256="sha256:" + "0" * 64, size=1)
    assert encode(msgspec.structs.replace(make_manifest(), files=[entry]))


def test_openssf_model_signing_verifies_a_shipyard_bundle_unchanged(nested, key, tmp_path):
    """The third-party check the trust model promises: OpenSSF's own CLI, no Shipyard code."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "model_signing"
    if not cli.exists():
        pytest.skip("the model_signing CLI is not installed in this environment")
    pub = tmp_path / "signer.pub"
    pub.write_bytes(key.public_pem())

    def verify(bundle) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(cli), "verify", "key", "--signature", str(bundle / SIGNATURE_FILE),
             "--public_key", str(pub), str(bundle)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    ok = verify(nested)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(nested, tampered)
    (tampered / "tok" / "tokenizer.json").write_bytes(b'{"evil": 1}')
    assert verify(tampered).returncode != 0


def test_restamping_sets_the_name_refuses_to_overwrite_and_verifies(nested, key, trusted, tmp_path):
    from artifacts.bundle import restamp_bundle
    from artifacts.errors import BundleExistsError

    dest = tmp_path / "stamped"
    m = restamp_bundle(nested, dest, version=7, key=key, model="query-embedder")
    assert (m.model.name, m.model.version) == ("query-embedder", 7)
    v = verify_bundle(dest, trusted)
    assert v.path == dest and v.manifest.model.name == "query-embedder"
    with pytest.raises(BundleExistsError):
        restamp_bundle(nested, dest, version=8, key=key)
    m = restamp_bundle(nested, dest, version=8, key=key, overwrite=True)
    assert (m.model.name, m.model.version) == ("product-embedder", 8)


def test_bundle_directory_problems_name_the_directory(tmp_path, trusted, nested):
    with pytest.raises(MissingFileError, match=f"^no bundle directory at {tmp_path / 'none'}$"):
        verify_bundle(tmp_path / "none", trusted)
    os.symlink(nested, tmp_path / "link")
    with pytest.raises(
        UnsafePathError, match=f"^bundle directory {tmp_path / 'link'} is a symlink$"
    ):
        verify_bundle(tmp_path / "link", trusted)
    (nested / MANIFEST_FILE).unlink()
    with pytest.raises(MissingFileError, match=f"^{MANIFEST_FILE} is missing: "):
        verify_bundle(nested, trusted)
    from artifacts.bundle import read_manifest

    with pytest.raises(MissingFileError, match=f"^{MANIFEST_FILE} is missing: "):
        read_manifest(nested)


def test_a_symlinked_signature_is_named_in_the_error(nested, trusted, tmp_path):
    sig = nested / SIGNATURE_FILE
    (tmp_path / "sig").write_bytes(sig.read_bytes())
    sig.unlink()
    os.symlink(tmp_path / "sig", sig)
    with pytest.raises(UnsafePathError, match=f"^{SIGNATURE_FILE} is a symlink: "):
        verify_bundle(nested, trusted)
