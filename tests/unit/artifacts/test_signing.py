import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from artifacts.errors import (
    BadSignatureError,
    KeyFileError,
    MissingSignatureError,
    UntrustedKeyError,
)
from artifacts.signing import (
    KEY_ID_PREFIX,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SigningKey,
    TrustedKeys,
    generate_keypair,
    key_hint,
    load_signing_key,
)


def test_generate_load_sign_verify(tmp_path):
    priv, pub, kid = generate_keypair(tmp_path)
    assert oct(os.stat(priv).st_mode & 0o777) == "0o600"
    key = load_signing_key(priv)
    assert key.key_id == kid and kid.startswith(KEY_ID_PREFIX)
    assert kid == KEY_ID_PREFIX + key_hint(key.public_key)[:16]  # a prefix of the OMS hint
    trusted = TrustedKeys.from_paths([pub])
    envelope = key.sign_envelope(b'{"hello": 1}')
    assert trusted.open_envelope(envelope) == (b'{"hello": 1}', kid)
    tampered = {**envelope, "payload": base64.b64encode(b'{"hello": 2}').decode()}
    with pytest.raises(BadSignatureError, match="does not verify"):
        trusted.open_envelope(tampered)
    with pytest.raises(BadSignatureError, match="payloadType"):
        trusted.open_envelope(envelope, "application/other")
    with pytest.raises(BadSignatureError, match="malformed"):
        trusted.open_envelope({"payload": "x"})
    assert trusted.open_envelope(envelope)[1] == kid  # opening does not consume the envelope


def test_untrusted_and_missing(tmp_path):
    generate_keypair(tmp_path)
    other = SigningKey.generate()
    trusted = TrustedKeys.from_paths([tmp_path])  # a directory of .pub files
    assert len(trusted) == 1
    with pytest.raises(UntrustedKeyError, match=other.key_id):
        trusted.open_envelope(other.sign_envelope(b"x"))
    with pytest.raises(MissingSignatureError):
        trusted.open_envelope({**other.sign_envelope(b"x"), "signatures": []})
    with pytest.raises(MissingSignatureError):
        trusted.key(None)
    with pytest.raises(MissingSignatureError):
        trusted.by_hint("short")


def test_refuses_overwrite_and_bad_key_files(tmp_path):
    generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    # a lost public key is no reason to replace the private one
    (tmp_path / PUBLIC_KEY_FILE).unlink()
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == before
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_signing_key(bad)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signing_key(tmp_path / "missing.key")
    pub_only = tmp_path / "pub.pem"
    pub_only.write_bytes(SigningKey.generate().public_pem())
    with pytest.raises(KeyFileError, match="private key"):
        load_signing_key(pub_only)
    for name, key in (
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("p384", ec.generate_private_key(ec.SECP384R1())),
    ):
        path = tmp_path / f"{name}.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(KeyFileError, match="P-256"):
            load_signing_key(path)
