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


def test_key_file_errors_name_the_file_and_the_problem(tmp_path):
    from artifacts.signing import load_public_key, public_key_from_pem

    broken = tmp_path / "broken.key"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match=f"{broken} is not an unencrypted PEM private key"):
        load_signing_key(broken)
    rsa_path = tmp_path / "rsa.key"
    rsa_path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match=f"{rsa_path} holds a .*RSAPrivateKey, expected"):
        load_signing_key(rsa_path)
    missing = tmp_path / "nope.pub"
    with pytest.raises(KeyFileError, match=f"cannot read public key {missing}"):
        load_public_key(missing)
    with pytest.raises(KeyFileError, match="^key is not a PEM public key"):
        public_key_from_pem(b"garbage")
    p384 = tmp_path / "p384.pub"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match=f"^{p384} is an ECDSA key on secp384r1"):
        load_public_key(p384)
    with pytest.raises(KeyFileError, match="^key is an ECDSA key on secp384r1"):
        public_key_from_pem(p384.read_bytes())


def test_a_loaded_key_remembers_its_file_and_keypairs_go_into_new_directories(tmp_path):
    priv, _pub, kid = generate_keypair(tmp_path / "a" / "b")
    key = load_signing_key(priv)
    assert key.path == priv and key.key_id == kid
    trusted = TrustedKeys.of(key.public_pem())
    assert list(trusted.keys) == [kid]
    sig = key.sign_raw(b"data")
    trusted.verify_raw(kid, b"data", sig)
    with pytest.raises(
        BadSignatureError, match=f"signature by {kid} does not match: the signed content"
    ):
        trusted.verify_raw(kid, b"other", sig)


def test_trust_errors_say_what_is_trusted():
    empty = TrustedKeys()
    stranger = SigningKey.generate()
    with pytest.raises(UntrustedKeyError, match=r"\(trusted: none\)$"):
        empty.key(stranger.key_id)
    a, b = SigningKey.generate(), SigningKey.generate()
    two = TrustedKeys.of(a.public_pem(), b.public_pem())
    known = ", ".join(sorted([a.key_id, b.key_id]))
    with pytest.raises(UntrustedKeyError, match=rf"\(trusted: {known}\)$"):
        two.key(stranger.key_id)
    with pytest.raises(MissingSignatureError, match="^the signature names no key$"):
        two.key("")
    with pytest.raises(
        MissingSignatureError, match=r"^the signature names no key \(publicKey.hint\)$"
    ):
        two.by_hint(None)
    with pytest.raises(BadSignatureError, match="^the envelope is not a JSON object$"):
        two.open_envelope([])
    hint = key_hint(a.public_key)
    assert two.by_hint(hint) == (a.key_id, two.keys[a.key_id])


def test_envelope_trust_errors_name_signers_and_trusted_keys():
    a, b, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    two = TrustedKeys.of(a.public_pem(), b.public_pem())
    env = stranger.sign_envelope(b"x")
    known = ", ".join(sorted([a.key_id, b.key_id]))
    with pytest.raises(
        UntrustedKeyError,
        match=rf"^the envelope is signed by {stranger.key_id}, none of them trusted \(trusted: {known}\)$",
    ):
        two.open_envelope(env)
    with pytest.raises(UntrustedKeyError, match=r"\(trusted: none\)$"):
        TrustedKeys().open_envelope(env)
    with pytest.raises(MissingSignatureError, match="^the envelope carries no signature$"):
        two.open_envelope({**env, "signatures": []})
