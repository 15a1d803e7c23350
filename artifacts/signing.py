"""Signing keys (ECDSA P-256), key ids, DSSE envelopes, and the set of keys a verifier trusts.

P-256 because it is what OpenSSF Model Signing's bare-key signer and verifier accept
(:mod:`artifacts.oms`), and what securesystemslib, TUF and DSSE tooling all speak. A key id is
``ecdsa-p256:`` + the first 16 hex chars of sha256 over the public key's PEM, i.e. a prefix of
the ``publicKey.hint`` that an OMS signature carries, so a signature names its signer.
Private keys are written 0600, never overwritten, and stay where they were generated.
"""

from __future__ import annotations

import binascii
import copy
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from artifacts import atomic
from artifacts.errors import (
    BadSignatureError,
    KeyFileError,
    MissingSignatureError,
    UntrustedKeyError,
)

PRIVATE_KEY_FILE = "publisher.key"
PUBLIC_KEY_FILE = "publisher.pub"
KEY_ID_PREFIX = "ecdsa-p256:"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"


def public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """What OMS records as ``publicKey.hint``: sha256 over the PEM, hex."""
    return hashlib.sha256(public_pem(public_key)).hexdigest()


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    return KEY_ID_PREFIX + key_hint(public_key)[:16]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding (what is actually signed)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    path: Path | None = None  # where the PEM lives (OMS's signer reads keys from files)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def public_pem(self) -> bytes:
        return public_pem(self.public_key)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign_raw(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def sslib_key(self) -> SSlibKey:
        return SSlibKey.from_crypto(self.public_key, keyid=self.key_id)

    def sign_envelope(self, payload: bytes, payload_type: str = IN_TOTO_PAYLOAD) -> dict[str, Any]:
        """A DSSE envelope (JSON form) over ``payload``, signed by this key (securesystemslib)."""
        envelope = Envelope(payload, payload_type, {})
        envelope.sign(CryptoSigner(self.private_key, self.sslib_key()))
        return envelope.to_dict()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write ``publisher.key`` (0600) and ``publisher.pub`` into ``out_dir``; never replaces an
    existing private key unless asked (a lost key is worse than a refused command)."""
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    if not overwrite and (os.path.lexists(priv_path) or os.path.lexists(pub_path)):
        raise KeyFileError(f"{priv_path} or {pub_path} already exists; refusing to overwrite")
    key = SigningKey.generate()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(priv_path, key.private_pem(), mode=0o600)
    atomic.write_bytes(pub_path, key.public_pem())
    return priv_path, pub_path, key.key_id


def _check_curve(key: object, source: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{source} holds a {type(key).__name__}, expected an ECDSA P-256 key")
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{source} is an ECDSA key on {key.curve.name}, expected P-256")


def load_signing_key(path: Path) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" not in data:
        raise KeyFileError(f"{path} is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    _check_curve(key, str(path))
    return SigningKey(key, Path(path))  # type: ignore[arg-type]


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    return public_key_from_pem(data, source=str(path))


def public_key_from_pem(data: bytes, *, source: str = "key") -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source} is not a PEM public key: {exc}") from exc
    _check_curve(key, source)
    return key  # type: ignore[return-value]


@dataclass
class TrustedKeys:
    """The public keys whose signatures a verifier accepts, by key id."""

    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)

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

    @classmethod
    def of(cls, *pems: bytes) -> TrustedKeys:
        trusted = cls()
        for pem in pems:
            trusted.add(public_key_from_pem(pem))
        return trusted

    def add(self, key: ec.EllipticCurvePublicKey) -> str:
        kid = key_id_of(key)
        self.keys[kid] = key
        return kid

    def __len__(self) -> int:
        return len(self.keys)

    def key(self, key_id: str | None) -> ec.EllipticCurvePublicKey:
        if not key_id:
            raise MissingSignatureError("the signature names no key")
        key = self.keys.get(key_id)
        if key is None:
            known = ", ".join(sorted(self.keys)) or "none"
            raise UntrustedKeyError(
                f"signed by {key_id}, which is not a trusted key (trusted: {known})"
            )
        return key

    def by_hint(self, hint: object) -> tuple[str, ec.EllipticCurvePublicKey]:
        """The trusted key an OMS ``publicKey.hint`` (sha256 of its PEM) names."""
        if not isinstance(hint, str) or len(hint) != 64:
            raise MissingSignatureError("the signature names no key (publicKey.hint)")
        return KEY_ID_PREFIX + hint[:16], self.key(KEY_ID_PREFIX + hint[:16])

    def verify_raw(self, key_id: str, data: bytes, signature: bytes) -> None:
        try:
            self.key(key_id).verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise BadSignatureError(
                f"signature by {key_id} does not match: the signed content was changed after "
                "signing, or the signature is forged"
            ) from exc

    def open_envelope(
        self, envelope: object, payload_type: str = IN_TOTO_PAYLOAD
    ) -> tuple[bytes, str]:
        """Verify a DSSE envelope (JSON form) with securesystemslib; (payload, signer key id)."""
        if not isinstance(envelope, dict):
            raise BadSignatureError("the envelope is not a JSON object")
        try:
            env = Envelope.from_dict(copy.deepcopy(envelope))  # from_dict consumes its input
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BadSignatureError(f"the envelope is malformed: {exc}") from exc
        if env.payload_type != payload_type:
            raise BadSignatureError(f"the envelope's payloadType is not {payload_type}")
        if not env.signatures:
            raise MissingSignatureError("the envelope carries no signature")
        named = [k for k in env.signatures if k in self.keys]
        if not named:
            raise UntrustedKeyError(
                f"the envelope is signed by {', '.join(env.signatures)}, none of them trusted "
                f"(trusted: {', '.join(sorted(self.keys)) or 'none'})"
            )
        keys: list[Key] = [SSlibKey.from_crypto(self.keys[k], keyid=k) for k in named]
        try:
            accepted = env.verify(keys, 1)
        except (VerificationError, ValueError) as exc:
            raise BadSignatureError(
                f"the envelope's signature by {named[0]} does not verify: changed after signing, "
                "or forged"
            ) from exc
        return env.payload, next(iter(accepted))


def default_key_path() -> Path | None:
    """``$SHIPYARD_KEY`` if set (used by CLIs when --key is not given)."""
    value = os.environ.get("SHIPYARD_KEY")
    return Path(value) if value else None
