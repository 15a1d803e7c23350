"""Bundle signatures in the OpenSSF Model Signing (OMS) format.

A signed bundle carries ``model.sig``: a Sigstore bundle (JSON) holding a DSSE envelope whose
payload is an in-toto statement over every file of the bundle (``manifest.json`` included)
with its sha256. It is written by the ``model-signing`` library itself (bare-key ECDSA signing,
no network), so OpenSSF's own tool accepts a Shipyard bundle unchanged::

    model_signing verify key --signature BUNDLE/model.sig --public_key signer.pub BUNDLE

Verification here does not need the directory: the registry holds only the manifest and the
blobs. :func:`verify_signature` checks the DSSE signature with a trusted key (named by the
bundle's ``publicKey.hint``) and returns the signed file digests; the caller compares them
with what it has (the manifest's file list, or the files on disk).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from artifacts.atomic import write_bytes
from artifacts.digests import PREFIX, unb64
from artifacts.errors import BadSignatureError, MissingSignatureError
from artifacts.signing import IN_TOTO_PAYLOAD, SigningKey, TrustedKeys, pae

SIGNATURE_FILE = "model.sig"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@dataclass(frozen=True)
class SignedFiles:
    """What an OMS signature says: who signed, and each file's sha256 (``sha256:<hex>``)."""

    key_id: str
    files: dict[str, str]


def sign_directory(path: Path, key: SigningKey) -> Path:
    """Write ``path/model.sig`` over every file below ``path`` (the library hashes them)."""
    from model_signing import hashing, signing  # optional heavy import (sigstore), signing only

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="shipyard-oms-") as tmp:
        key_file = key.path
        if key_file is None:  # the library's signer reads its key from a file
            key_file = Path(tmp) / "signer.key"
            write_bytes(key_file, key.private_pem(), mode=0o600)
        out = Path(tmp) / SIGNATURE_FILE
        config = signing.Config().use_elliptic_key_signer(private_key=key_file)
        config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE]))
        config.sign(path, out)
        shutil.copyfile(out, path / SIGNATURE_FILE)
    return path / SIGNATURE_FILE


def _statement(signature: bytes, trusted: TrustedKeys) -> tuple[dict, str]:
    try:
        bundle = json.loads(signature)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadSignatureError(f"{SIGNATURE_FILE} is not valid JSON") from exc
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise BadSignatureError(f"{SIGNATURE_FILE} is not a Sigstore bundle ({BUNDLE_MEDIA_TYPE})")
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    key_id, _ = trusted.by_hint(hint)
    envelope = bundle.get("dsseEnvelope") or {}
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD:
        raise BadSignatureError(f"{SIGNATURE_FILE} does not carry an in-toto statement")
    payload = unb64(envelope.get("payload"), "the DSSE payload", BadSignatureError)
    sigs = envelope.get("signatures") or []
    if not sigs or not isinstance(sigs[0], dict):
        raise MissingSignatureError(f"{SIGNATURE_FILE} carries no signature")
    raw = unb64(sigs[0].get("sig"), "the DSSE signature", BadSignatureError)
    trusted.verify_raw(key_id, pae(IN_TOTO_PAYLOAD, payload), raw)
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise BadSignatureError("the signed statement is not JSON") from exc
    return statement, key_id


def verify_signature(signature: bytes, trusted: TrustedKeys) -> SignedFiles:
    """Check an OMS signature (bytes of ``model.sig``) and return the files it signs."""
    statement, key_id = _statement(signature, trusted)
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise BadSignatureError("the signed statement is not an OpenSSF model signature")
    predicate = statement.get("predicate") or {}
    serialization = predicate.get("serialization") or {}
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise BadSignatureError("the model signature does not sign sha256 digests of whole files")
    files: dict[str, str] = {}
    for res in predicate.get("resources") or []:
        if not isinstance(res, dict) or res.get("algorithm") != "sha256":
            raise BadSignatureError("the model signature lists a resource without a sha256")
        name, digest = res.get("name"), res.get("digest")
        if not isinstance(name, str) or not isinstance(digest, str) or name in files:
            raise BadSignatureError("the model signature lists a malformed or repeated resource")
        files[name] = PREFIX + digest
    return SignedFiles(key_id=key_id, files=files)


def check_covers(signed: SignedFiles, expected: Mapping[str, str]) -> None:
    """The signature must sign exactly ``expected`` (path → digest): nothing more or less."""
    if signed.files == dict(expected):
        return
    missing = sorted(set(expected) - set(signed.files))
    extra = sorted(set(signed.files) - set(expected))
    changed = sorted(p for p in set(expected) & set(signed.files) if expected[p] != signed.files[p])
    raise BadSignatureError(
        "the model signature does not cover this bundle exactly"
        + (f"; unsigned: {', '.join(missing)}" if missing else "")
        + (f"; signed but absent: {', '.join(extra)}" if extra else "")
        + (f"; different bytes: {', '.join(changed)}" if changed else "")
    )
