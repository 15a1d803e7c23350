"""ed25519 publisher keys: generate, load, sign manifest bytes, verify against a trusted set.

A key id is ``ed25519:`` + the first 16 hex chars of sha256 over the raw public key, so a
manifest names its signer without embedding the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from artifacts import atomic
from artifacts.errors import (
    BadSignatureError,
    KeyFileError,
    MissingSignatureError,
    UntrustedKeyError,
)

PRIVATE_KEY_FILE = "publisher.key"
PUBLIC_KEY_FILE = "publisher.pub"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """The signature file's content: base64 of the raw 64-byte signature."""
        return base64.b64encode(self.private_key.sign(data)) + b"\n"

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write ``publisher.key`` (0600) and ``publisher.pub`` into ``out_dir``."""
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise KeyFileError(f"{priv_path} or {pub_path} already exists; refusing to overwrite")
    key = SigningKey.generate()
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(priv_path, pem, mode=0o600)
    atomic.write_bytes(pub_path, key.public_pem())
    return priv_path, pub_path, key.key_id


def load_signing_key(path: Path) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an ed25519 key")
    return SigningKey(key)


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    return public_key_from_pem(data, source=str(path))


def public_key_from_pem(data: bytes, *, source: str = "key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source} holds a {type(key).__name__}, expected an ed25519 key")
    return key


@dataclass
class TrustedKeys:
    """The set of publisher keys whose signatures a verifier accepts."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Load ``.pub`` files; a directory contributes every ``*.pub`` inside it."""
        trusted = cls()
        for path in paths:
            path = Path(path)
            files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
            for file in files:
                trusted.add(load_public_key(file))
        return trusted

    def add(self, key: Ed25519PublicKey) -> str:
        kid = key_id_of(key)
        self.keys[kid] = key
        return kid

    def __len__(self) -> int:
        return len(self.keys)

    def verify(self, data: bytes, signature: bytes | None, key_id: str | None) -> str:
        """Return the key id if ``signature`` over ``data`` is valid and trusted; else raise."""
        if signature is None or not key_id:
            raise MissingSignatureError(
                "bundle is not signed (no manifest.sig / signing_key_id); sign it with "
                "`artifact build --key` or `artifact push --key`"
            )
        key = self.keys.get(key_id)
        if key is None:
            known = ", ".join(sorted(self.keys)) or "none"
            raise UntrustedKeyError(
                f"manifest is signed by {key_id}, which is not a trusted publisher key "
                f"(trusted: {known})"
            )
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadSignatureError("manifest.sig is not valid base64") from exc
        try:
            key.verify(raw, data)
        except InvalidSignature as exc:
            raise BadSignatureError(
                f"signature by {key_id} does not match manifest.json: the manifest was changed "
                "after signing or the signature is forged"
            ) from exc
        return key_id


def default_key_path() -> Path | None:
    """``$SHIPYARD_KEY`` if set (used by CLIs when --key is not given)."""
    value = os.environ.get("SHIPYARD_KEY")
    return Path(value) if value else None
