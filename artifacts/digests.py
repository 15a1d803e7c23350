"""sha256 digests of files and byte strings, in the ``sha256:<hex>`` form used everywhere."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def hex_of(digest: str) -> str:
    """The 64 hex characters of a ``sha256:`` digest (raises ValueError otherwise)."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r} (expected 'sha256:' + 64 hex chars)")
    return digest.split(":", 1)[1]


def sha256_tree(paths: list[tuple[str, Path]]) -> str:
    """A digest over named files, order-independent (used for source-model digests)."""
    h = hashlib.sha256()
    for name, path in sorted(paths):
        h.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return "sha256:" + h.hexdigest()
