"""Bundles: written atomically; every kind of tampering rejected with its own error."""

import os
import shutil

import msgspec
import pytest

from artifacts import oms
from artifacts.bundle import (
    check_relpath,
    read_manifest,
    restamp_bundle,
    verify_bundle,
    write_bundle,
)
from artifacts.errors import (
    BadSignatureError,
    BundleExistsError,
    DigestMismatchError,
    MissingFileError,
    MissingSignatureError,
    SizeMismatchError,
    UnlistedFileError,
    UnsafePathError,
    UntrustedKeyError,
)
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE, FileEntry, encode
from artifacts.signing import SigningKey
from tests.factories import make_manifest


@pytest.fixture
def bundle(tmp_path, key):
    src = tmp_path / "src.onnx"
    src.write_bytes(os.urandom(4096))
    dest = tmp_path / "bundle"
    write_bundle(
        dest,
        make_manifest("onnx-fp32"),
        {"model.onnx": src, "tokenizer.json": b'{"tok": 1}', "golden.npz": b"golden"},
        key=key,
    )
    return dest


def test_written_bundle_verifies(bundle, trusted, key):
    v = verify_bundle(bundle, trusted)
    assert v.key_id == key.key_id
    assert [f.path for f in v.manifest.files] == ["golden.npz", "model.onnx", "tokenizer.json"]
    assert v.manifest.signing_key_id == key.key_id
    assert v.digest.startswith("sha256:")
    assert sorted(os.listdir(bundle)) == sorted(
        [
            "golden.npz",
            MANIFEST_FILE,
            SIGNATURE_FILE,
            "model.onnx",
            "tokenizer.json",
        ]
    )


def test_integrity_only_mode_reports_no_key(bundle):
    assert verify_bundle(bundle, None).key_id is None


def test_flipped_byte_is_digest_mismatch(bundle, trusted):
    p = bundle / "model.onnx"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="model.onnx"):
        verify_bundle(bundle, trusted)


def test_truncated_file_is_size_mismatch(bundle, trusted):
    p = bundle / "model.onnx"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(SizeMismatchError, match="truncated"):
        verify_bundle(bundle, trusted)


def test_missing_file(bundle, trusted):
    (bundle / "golden.npz").unlink()
    with pytest.raises(MissingFileError, match="golden.npz"):
        verify_bundle(bundle, trusted)


def test_extra_file(bundle, trusted):
    (bundle / "extra.bin").write_bytes(b"x")
    with pytest.raises(UnlistedFileError, match="extra.bin"):
        verify_bundle(bundle, trusted)


def test_manifest_edited_after_signing(bundle, trusted):
    m = read_manifest(bundle)
    m.quality.metrics["cosine_min"] = 0.9999
    (bundle / MANIFEST_FILE).write_bytes(encode(m))
    with pytest.raises(BadSignatureError, match="different bytes: manifest.json"):
        verify_bundle(bundle, trusted)


def test_signature_by_untrusted_key(tmp_path, trusted):
    other = SigningKey.generate()
    dest = tmp_path / "b2"
    write_bundle(dest, make_manifest(), {"model.onnx": b"m"}, key=other)
    with pytest.raises(UntrustedKeyError, match="not a trusted key"):
        verify_bundle(dest, trusted)


def test_unsigned_bundle_when_signature_required(tmp_path, trusted):
    dest = tmp_path / "b3"
    write_bundle(dest, make_manifest(), {"model.onnx": b"m"})
    with pytest.raises(MissingSignatureError):
        verify_bundle(dest, trusted)
    (dest / SIGNATURE_FILE).write_bytes(b"AAAA")
    with pytest.raises(BadSignatureError, match="not valid JSON"):  # not an OMS bundle
        verify_bundle(dest, trusted)


def _forge(bundle, key, path):
    """Sign a manifest whose file list holds ``path`` (a publisher-side mistake or attack)."""
    m = read_manifest(bundle)
    m = msgspec.structs.replace(
        m, files=[*m.files, FileEntry(path=path, sha256="sha256:" + "0" * 64, size=1)]
    )
    (bundle / MANIFEST_FILE).write_bytes(encode(m))
    oms.sign_directory(bundle, key)


@pytest.mark.parametrize(
    "path",
    ["../evil", "/etc/passwd", "a/../../b", "./x", "a//b", "a\\b", "manifest.json", ".hidden"],
)
def test_path_tricks_in_file_list(bundle, trusted, key, path):
    _forge(bundle, key, path)
    with pytest.raises(UnsafePathError):
        verify_bundle(bundle, trusted)


def test_symlink_in_bundle(bundle, trusted, tmp_path):
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", bundle / "link")
    with pytest.raises(UnsafePathError, match="symlink"):
        verify_bundle(bundle, trusted)


def test_listed_file_replaced_by_symlink(bundle, trusted, tmp_path):
    target = tmp_path / "copy"
    shutil.copy(bundle / "golden.npz", target)
    (bundle / "golden.npz").unlink()
    os.symlink(target, bundle / "golden.npz")
    with pytest.raises(UnsafePathError, match="symlink"):
        verify_bundle(bundle, trusted)


def test_bundle_dir_symlink(bundle, trusted, tmp_path):
    os.symlink(bundle, tmp_path / "alias")
    with pytest.raises(UnsafePathError):
        verify_bundle(tmp_path / "alias", trusted)


def test_crash_midway_leaves_nothing(tmp_path, key):
    class Exploding:
        def __fspath__(self):
            raise RuntimeError("disk on fire")

    dest = tmp_path / "crashy"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_bundle(dest, make_manifest(), {"a.bin": b"1", "b.bin": Exploding()}, key=key)  # type: ignore[dict-item]
    assert not dest.exists()
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite_then_overwrites(bundle, key, trusted):
    with pytest.raises(BundleExistsError, match="--overwrite"):
        write_bundle(bundle, make_manifest(), {"model.onnx": b"new"}, key=key)
    write_bundle(bundle, make_manifest(), {"model.onnx": b"new"}, key=key, overwrite=True)
    v = verify_bundle(bundle, trusted)
    assert [f.path for f in v.manifest.files] == ["model.onnx"]
    assert sorted(os.listdir(bundle.parent)) == ["bundle", "src.onnx"]


def test_writer_rejects_unsafe_names(tmp_path):
    with pytest.raises(UnsafePathError):
        write_bundle(tmp_path / "x", make_manifest(), {"../up": b"1"})
    assert not (tmp_path / "x").exists()
    assert check_relpath("onnx/model.onnx") == "onnx/model.onnx"


def test_restamp_sets_version_and_resigns(bundle, tmp_path, trusted, key):
    out = tmp_path / "stamped"
    restamp_bundle(bundle, out, version=7, key=key)
    v = verify_bundle(out, trusted)
    assert v.manifest.model.version == 7
    assert [f.sha256 for f in v.manifest.files] == [f.sha256 for f in read_manifest(bundle).files]
