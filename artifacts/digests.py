"""sha256 digests of files, byte strings and hash objects, in the ``sha256:<hex>`` form used
everywhere (the one place that writes the prefix)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any

import msgspec

CHUNK = 1 << 20
PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def unb64(value: object, what: str, error: type[Exception]) -> bytes:
    """Strict base64 (no stray characters), raising ``error`` naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise error(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} is not valid base64") from exc


def digest_of(h: Any) -> str:
    """The ``sha256:<hex>`` form of a finished ``hashlib.sha256()`` object."""
    return PREFIX + h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return digest_of(hashlib.sha256(data))


def sha256_json(value: object) -> str:
    """Digest of the canonical JSON of ``value`` (sorted keys): stable across processes."""
    return sha256_bytes(msgspec.json.encode(value, order="sorted"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return digest_of(h)


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


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
    return digest_of(h)
