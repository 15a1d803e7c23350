import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from artifacts.errors import (
    BadSignatureError,
    KeyFileError,
    MissingSignatureError,
    UntrustedKeyError,
)
from artifacts.signing import SigningKey, TrustedKeys, generate_keypair, load_signing_key


def test_generate_load_sign_verify(tmp_path):
    priv, pub, kid = generate_keypair(tmp_path)
    assert oct(os.stat(priv).st_mode & 0o777) == "0o600"
    key = load_signing_key(priv)
    assert key.key_id == kid and kid.startswith("ed25519:")
    trusted = TrustedKeys.from_paths([pub])
    sig = key.sign(b"hello")
    assert trusted.verify(b"hello", sig, kid) == kid
    with pytest.raises(BadSignatureError, match="changed after signing"):
        trusted.verify(b"hellO", sig, kid)
    with pytest.raises(BadSignatureError, match="base64"):
        trusted.verify(b"hello", b"!!!", kid)


def test_untrusted_and_missing(tmp_path):
    generate_keypair(tmp_path)
    other = SigningKey.generate()
    trusted = TrustedKeys.from_paths([tmp_path])  # a directory of .pub files
    assert len(trusted) == 1
    with pytest.raises(UntrustedKeyError, match=other.key_id):
        trusted.verify(b"x", other.sign(b"x"), other.key_id)
    with pytest.raises(MissingSignatureError):
        trusted.verify(b"x", None, None)


def test_refuses_overwrite_and_bad_key_files(tmp_path):
    generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_signing_key(bad)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signing_key(tmp_path / "missing.key")
    with pytest.raises(KeyFileError, match="private key"):
        load_signing_key(tmp_path / "publisher.pub")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = tmp_path / "rsa.key"
    rsa_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="expected an ed25519"):
        load_signing_key(rsa_path)
