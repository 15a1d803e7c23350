"""OMS signature verification against forged ``model.sig`` files: each is signed by a trusted
key (so only the checks after the signature can refuse it) or malformed before it, and each
must be refused with its own reason. What passes must sign exactly the bundle's files."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from artifacts import oms
from artifacts.errors import BadSignatureError, MissingSignatureError, UntrustedKeyError
from artifacts.signing import IN_TOTO_PAYLOAD, SigningKey, TrustedKeys, key_hint, pae

FILES = {"model.onnx": "a" * 64, "tokenizer.json": "b" * 64}


def _statement(**over) -> dict:
    st = {
        "_type": oms.STATEMENT_TYPE,
        "predicateType": oms.PREDICATE_TYPE,
        "subject": [{"name": "bundle", "digest": {"sha256": "c" * 64}}],
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256"},
            "resources": [
                {"name": n, "algorithm": "sha256", "digest": d} for n, d in FILES.items()
            ],
        },
    }
    st.update(over)
    return st


def _bundle(key: SigningKey, statement: object, *, payload: bytes | None = None) -> dict:
    raw = payload if payload is not None else json.dumps(statement).encode()
    sig = key.sign_raw(pae(IN_TOTO_PAYLOAD, raw))
    return {
        "mediaType": oms.BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key)}},
        "dsseEnvelope": {
            "payload": base64.b64encode(raw).decode(),
            "payloadType": IN_TOTO_PAYLOAD,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }


def _verify(bundle: dict, trusted: TrustedKeys):
    return oms.verify_signature(json.dumps(bundle).encode(), trusted)


def test_a_well_formed_signature_yields_the_signed_files(key, trusted):
    signed = _verify(_bundle(key, _statement()), trusted)
    assert signed.key_id == key.key_id
    assert signed.files == {n: "sha256:" + d for n, d in FILES.items()}
    oms.check_covers(signed, signed.files)


def _mutated(path: str, value):
    st = _statement()
    target = st
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    target[last] = value
    return st


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        (_statement(_type="https://in-toto.io/Statement/v0.1"), "not an OpenSSF model signature"),
        (_statement(predicateType="https://slsa.dev/provenance/v1"), "not an OpenSSF model signature"),
        (_mutated("predicate.serialization", {"method": "shards", "hash_type": "sha256"}), "sha256 digests of whole files"),
        (_mutated("predicate.serialization", {"method": "files", "hash_type": "blake2"}), "sha256 digests of whole files"),
        (_mutated("predicate.resources", ["model.onnx"]), "resource without a sha256"),
        (_mutated("predicate.resources", [{"name": "m", "algorithm": "md5", "digest": "0"}]), "resource without a sha256"),
        (_mutated("predicate.resources", [{"name": 5, "algorithm": "sha256", "digest": "0"}]), "malformed or repeated resource"),
        (_mutated("predicate.resources", [{"name": "m", "algorithm": "sha256", "digest": 5}]), "malformed or repeated resource"),
        (_mutated("predicate.resources", [{"name": "m", "algorithm": "sha256", "digest": "0"}] * 2), "malformed or repeated resource"),
    ],
)  # fmt: skip
def test_signed_but_malformed_statements_are_refused(key, trusted, statement, why):
    with pytest.raises(BadSignatureError, match=f"^the (signed statement|model signature).*{why}"):
        _verify(_bundle(key, statement), trusted)


def test_a_payload_that_is_not_json_is_refused_after_the_signature(key, trusted):
    with pytest.raises(BadSignatureError, match="^the signed statement is not JSON$"):
        _verify(_bundle(key, None, payload=b"\x00not json"), trusted)


def _edit(bundle: dict, path: str, value) -> dict:
    b = copy.deepcopy(bundle)
    target = b
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return b


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error", "why"),
    [
        ("mediaType", "application/json", BadSignatureError, "is not a Sigstore bundle"),
        ("mediaType", _DELETE, BadSignatureError, "is not a Sigstore bundle"),
        ("dsseEnvelope.payloadType", "text/plain", BadSignatureError, "does not carry an in-toto statement"),
        ("dsseEnvelope.payload", "@@@", BadSignatureError, "the DSSE payload is not valid base64"),
        ("dsseEnvelope.payload", 7, BadSignatureError, "the DSSE payload is missing"),
        ("dsseEnvelope.signatures", [], MissingSignatureError, "carries no signature"),
        ("dsseEnvelope.signatures", ["sig"], MissingSignatureError, "carries no signature"),
        ("dsseEnvelope.signatures", [{"sig": "@@"}], BadSignatureError, "the DSSE signature is not valid base64"),
        ("dsseEnvelope.signatures", [{}], BadSignatureError, "the DSSE signature is missing"),
        ("verificationMaterial", {}, MissingSignatureError, "names no key"),
    ],
)  # fmt: skip
def test_malformed_bundles_are_refused_with_their_reason(key, trusted, path, value, error, why):
    with pytest.raises(error, match=why):
        _verify(_edit(_bundle(key, _statement()), path, value), trusted)


def test_a_bundle_that_is_not_a_json_object_is_refused(trusted):
    for raw in (b"[1]", b'"x"'):
        with pytest.raises(
            BadSignatureError, match=r"model.sig is not a Sigstore bundle \(application"
        ):
            oms.verify_signature(raw, trusted)
    with pytest.raises(BadSignatureError, match="not valid JSON"):
        oms.verify_signature(b"\xff{", trusted)


def test_a_stranger_or_a_changed_payload_is_refused(key, trusted):
    stranger = SigningKey.generate()
    with pytest.raises(UntrustedKeyError):
        _verify(_bundle(stranger, _statement()), trusted)
    good = _bundle(key, _statement())
    forged = _edit(good, "dsseEnvelope.payload", base64.b64encode(b'{"_type": 1}').decode())
    with pytest.raises(BadSignatureError, match="does not match"):
        _verify(forged, trusted)


def test_coverage_must_be_exact_and_says_what_differs():
    signed = oms.SignedFiles(key_id="k", files={"a": "sha256:1", "b": "sha256:2", "c": "sha256:3"})
    oms.check_covers(signed, {"a": "sha256:1", "b": "sha256:2", "c": "sha256:3"})
    with pytest.raises(BadSignatureError) as err:
        oms.check_covers(signed, {"a": "sha256:1", "b": "sha256:X", "d": "sha256:4"})
    assert str(err.value) == (
        "the model signature does not cover this bundle exactly; unsigned: d; "
        "signed but absent: c; different bytes: b"
    )
    with pytest.raises(BadSignatureError) as err:
        oms.check_covers(signed, {"a": "sha256:1", "b": "sha256:2"})
    assert str(err.value).endswith("exactly; signed but absent: c")


def test_signing_writes_model_sig_over_every_file_without_leaving_the_key(tmp_path, key, trusted):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.onnx").write_bytes(b"m")
    (tmp_path / "b" / "sub").mkdir()
    (tmp_path / "b" / "sub" / "t.json").write_bytes(b"{}")
    path = oms.sign_directory(tmp_path / "b", key)
    assert path == tmp_path / "b" / "model.sig"
    signed = oms.verify_signature(path.read_bytes(), trusted)
    assert sorted(signed.files) == ["model.onnx", "sub/t.json"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model.onnx", "model.sig", "sub"]


def test_coverage_messages_name_only_what_differs():
    signed = oms.SignedFiles(key_id="k", files={"a": "sha256:1"})
    with pytest.raises(BadSignatureError) as err:
        oms.check_covers(signed, {"a": "sha256:1", "b": "sha256:2", "c": "sha256:3"})
    assert (
        str(err.value) == "the model signature does not cover this bundle exactly; unsigned: b, c"
    )
    with pytest.raises(BadSignatureError) as err:
        oms.check_covers(oms.SignedFiles("k", {"a": "sha256:1", "b": "sha256:2"}), {})
    assert str(err.value).endswith("exactly; signed but absent: a, b")
    with pytest.raises(BadSignatureError) as err:
        oms.check_covers(signed, {"a": "sha256:9"})
    assert str(err.value).endswith("exactly; different bytes: a")
