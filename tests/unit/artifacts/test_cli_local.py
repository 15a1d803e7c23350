"""`artifact keys generate / inspect / verify` run as a user runs them (a real subprocess)."""

import json
import subprocess
import sys

import pytest

from artifacts.bundle import write_bundle
from artifacts.signing import load_signing_key
from tests.factories import make_manifest


def artifact(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The ``artifact`` CLI in a child process (``env``: its whole environment, if given)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from artifacts.cli import main; sys.exit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture
def signed(tmp_path):
    r = artifact("keys", "generate", "--out", str(tmp_path / "keys"))
    assert r.returncode == 0, r.stderr
    assert "key id" in r.stdout
    key = load_signing_key(tmp_path / "keys" / "publisher.key")
    write_bundle(tmp_path / "b", make_manifest("onnx-int8"), {"model.onnx": b"abc"}, key=key)
    return tmp_path


def test_verify_ok_and_json(signed):
    r = artifact(
        "verify", str(signed / "b"), "--trusted-key", str(signed / "keys" / "publisher.pub")
    )
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout and "onnx-int8" in r.stdout
    r = artifact("verify", str(signed / "b"), "--trusted-key", str(signed / "keys"), "--json")
    assert json.loads(r.stdout)["valid"] is True


def test_verify_failure_says_why(signed):
    (signed / "b" / "model.onnx").write_bytes(b"abd")
    r = artifact(
        "verify", str(signed / "b"), "--trusted-key", str(signed / "keys" / "publisher.pub")
    )
    assert r.returncode == 1
    assert "model.onnx" in r.stderr and "corrupted or tampered" in r.stderr


def test_verify_requires_trust_or_explicit_integrity_only(signed):
    r = artifact("verify", str(signed / "b"))
    assert r.returncode == 1 and "--trusted-key" in r.stderr
    r = artifact("verify", str(signed / "b"), "--integrity-only")
    assert r.returncode == 0 and "NOT checked" in r.stdout


def test_inspect_table_and_json(signed):
    r = artifact("inspect", str(signed / "b"))
    assert r.returncode == 0, r.stderr
    for word in ("product-embedder", "onnx-int8", "int8", "avx512_vnni", "passed", "model.onnx"):
        assert word in r.stdout
    r = artifact("inspect", str(signed / "b"), "--json")
    assert json.loads(r.stdout)["target"]["id"] == "onnx-int8"


def test_inspect_missing_bundle(tmp_path):
    r = artifact("inspect", str(tmp_path / "nope"))
    assert r.returncode == 1 and "missing" in r.stderr
