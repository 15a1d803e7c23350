"""Worker attestations as central checks them: a provenance or verification statement must be
signed by the right worker's key and say exactly what was leased; anything else — another key,
other parameters, another builder, other files, a worker verifying itself, hostile JSON shapes —
is refused with the reason, never a crash."""

from __future__ import annotations

import json

import pytest

from artifacts import provenance as pv
from artifacts.errors import BadSignatureError, Unprocessable, UntrustedKeyError
from artifacts.signing import SigningKey, TrustedKeys

FILES = {"model.onnx": "sha256:" + "a" * 64, "tokenizer.json": "sha256:" + "b" * 64}
MANIFEST = "sha256:" + "c" * 64


def _params(**over) -> pv.BuildParameters:
    base = {
        "model": "product-embedder", "version": 3, "task": "embedding", "target": "onnx-int8",
        "source": "sha256:" + "d" * 64, "calibration": "sha256:" + "e" * 64, "eval": None,
        "thresholds": {"cosine_min": 0.98, "cosine_mean": 0.995}, "max_batch": 64,
    }  # fmt: skip
    return pv.BuildParameters(**{**base, **over})


def _provenance(params=None, builder="w1", files=FILES) -> dict:
    return pv.provenance_statement(
        files=files,
        params=params or _params(),
        builder=builder,
        toolchain={"onnxruntime": "1.32.0", "python": "3.11"},
        metrics={"cosine_min": 0.99},
        started="2026-11-29T10:00:00Z",
        finished="2026-11-29T10:01:00Z",
    )


@pytest.fixture
def w1() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def w1_trust(w1) -> TrustedKeys:
    return TrustedKeys.of(w1.public_pem())


def _check(envelope: bytes, trust: TrustedKeys, **over):
    kw = {"params": _params(), "builder": "w1", "files": FILES, **over}
    return pv.check_provenance(envelope, trust, **kw)


def test_a_provenance_saying_what_was_leased_is_accepted(w1, w1_trust):
    st = _check(pv.sign_statement(_provenance(), w1), w1_trust)
    definition = st["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["thresholds"] == {
        "cosine_mean": 0.995,
        "cosine_min": 0.98,
    }
    assert [d["name"] for d in definition["resolvedDependencies"]] == ["source", "calibration"]
    assert st["subject"] == [
        {"name": "model.onnx", "digest": {"sha256": "a" * 64}},
        {"name": "tokenizer.json", "digest": {"sha256": "b" * 64}},
    ]
    assert st["predicate"]["runDetails"]["builder"]["id"] == pv.BUILDER_PREFIX + "w1"


def test_another_workers_key_is_refused(w1_trust):
    other = SigningKey.generate()
    with pytest.raises(UntrustedKeyError):
        _check(pv.sign_statement(_provenance(), other), w1_trust)


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"params": _params(version=4)}, "parameters .* are not the job's"),
        ({"params": _params(thresholds={"cosine_min": 0.5})}, "are not the job's"),
        ({"builder": "w2"}, "builder 'https://shipyard.dev/workers/w1' is not 'https://shipyard.dev/workers/w2'"),
        ({"files": {**FILES, "evil.so": "sha256:" + "f" * 64}}, "its subjects are not the bundle's files"),
    ],
)  # fmt: skip
def test_a_provenance_about_something_else_is_refused(w1, w1_trust, over, why):
    with pytest.raises(Unprocessable, match=f"^provenance.json does not match the job: .*{why}"):
        _check(pv.sign_statement(_provenance(), w1), w1_trust, **over)


def test_every_mismatch_is_reported_together(w1, w1_trust):
    st = _provenance()
    st["predicateType"] = "https://slsa.dev/provenance/v0.2"
    with pytest.raises(Unprocessable) as err:
        _check(pv.sign_statement(st, w1), w1_trust, builder="w9", files={})
    assert str(err.value).startswith(
        "provenance.json does not match the job: not a Shipyard SLSA v1 provenance; builder "
    )
    assert str(err.value).endswith("; its subjects are not the bundle's files")
    st = _provenance()
    st["predicate"]["buildDefinition"]["buildType"] = "https://example.com/other"
    with pytest.raises(Unprocessable, match="not a Shipyard SLSA v1 provenance$"):
        _check(pv.sign_statement(st, w1), w1_trust)


@pytest.mark.parametrize(
    "path",
    [
        "predicate",
        "predicate.buildDefinition",
        "predicate.runDetails",
        "predicate.runDetails.builder",
    ],
)
@pytest.mark.parametrize("hostile", [[], "x", 5, None])
def test_hostile_shapes_are_mismatches_not_crashes(w1, w1_trust, path, hostile):
    st = _provenance()
    target = st
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    target[last] = hostile
    with pytest.raises(Unprocessable):
        _check(pv.sign_statement(st, w1), w1_trust)


def test_envelopes_and_statements_that_are_not_what_they_claim(w1, w1_trust):
    with pytest.raises(BadSignatureError, match="^provenance.json is not a JSON DSSE envelope$"):
        _check(b"\xff not json", w1_trust)
    env = w1.sign_envelope(b"not json at all")
    with pytest.raises(BadSignatureError, match="^provenance.json's statement is not JSON$"):
        _check(json.dumps(env).encode(), w1_trust)
    for statement in ([1, 2], {"_type": "https://in-toto.io/Statement/v0.1"}):
        env = w1.sign_envelope(json.dumps(statement).encode())
        with pytest.raises(
            BadSignatureError, match="^provenance.json is not an in-toto v1 statement$"
        ):
            _check(json.dumps(env).encode(), w1_trust)


def test_for_job_takes_the_request_as_leased():
    from artifacts.wire import BuildRequest

    req = BuildRequest(
        model="m", task="rerank", source_blob="sha256:" + "1" * 64, targets=["onnx-fp32"],
        calibration_blob="sha256:" + "2" * 64, eval_blob="sha256:" + "3" * 64,
        thresholds={"top1_agreement": 0.9}, max_batch=16,
    )  # fmt: skip
    p = pv.BuildParameters.for_job(req, "onnx-fp32", 5)
    assert p.as_dict() == {
        "model": "m", "version": 5, "task": "rerank", "target": "onnx-fp32",
        "source": "sha256:" + "1" * 64, "calibration": "sha256:" + "2" * 64,
        "eval": "sha256:" + "3" * 64, "thresholds": {"top1_agreement": 0.9}, "max_batch": 16,
    }  # fmt: skip


# ---- verification attestations ---------------------------------------------------------------


def _verification(**over) -> dict:
    kw = {
        "subject": "product-embedder/v3/onnx-int8", "manifest_digest": MANIFEST, "verifier": "w2",
        "builder": "w1", "passed": True, "metrics": {"b": 2.0, "a": 1.0},
        "thresholds": {"a": 0.5}, "reason": "",
    }  # fmt: skip
    return pv.verification_statement(**{**kw, **over})


def _checkv(envelope: bytes, trust: TrustedKeys, **over):
    kw = {"manifest_digest": MANIFEST, "verifier": "w2", "builder": "w1", **over}
    return pv.check_verification(envelope, trust, **kw)


@pytest.fixture
def w2() -> SigningKey:
    return SigningKey.generate()


def test_a_verification_by_another_worker_about_this_manifest_is_accepted(w2):
    trust = TrustedKeys.of(w2.public_pem())
    pred = _checkv(pv.sign_statement(_verification(), w2), trust)
    assert pred["passed"] is True and list(pred["metrics"]) == ["a", "b"]
    assert pred["checks"] == ["signature", "golden", "gate"]
    failed = _checkv(pv.sign_statement(_verification(passed=False, reason="cos 0.9"), w2), trust)
    assert failed["passed"] is False and failed["reason"] == "cos 0.9"


def test_a_worker_cannot_verify_its_own_build(w1):
    with pytest.raises(Unprocessable, match="^worker w1 cannot verify its own build$"):
        _checkv(b"{}", TrustedKeys.of(w1.public_pem()), verifier="w1")


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        (_verification(manifest_digest="sha256:" + "9" * 64), "its subject is not this bundle's manifest"),
        (_verification(verifier="w3"), "it names another verifier than w2"),
        (_verification(builder="w4"), "it names another builder than w1"),
        (_verification(passed="yes"), "it does not say whether the bundle passed"),
        ({**_verification(), "predicateType": pv.SLSA_PROVENANCE}, "not a Shipyard verification"),
        ({**_verification(), "subject": []}, "its subject is not this bundle's manifest"),
        ({**_verification(), "subject": "x"}, "its subject is not this bundle's manifest"),
        ({**_verification(), "subject": [5]}, "its subject is not this bundle's manifest"),
        ({**_verification(), "subject": _verification()["subject"] * 2}, "its subject is not"),
        ({**_verification(), "predicate": []}, "another verifier than w2; it names another builder"),
    ],
)  # fmt: skip
def test_a_verification_about_something_else_is_refused(w2, statement, why):
    with pytest.raises(Unprocessable, match=f"^verification attestation refused: .*{why}"):
        _checkv(pv.sign_statement(statement, w2), TrustedKeys.of(w2.public_pem()))


def test_signed_statements_are_canonical_json(w1):
    st = _provenance()
    env = json.loads(pv.sign_statement(st, w1))
    import base64

    payload = base64.b64decode(env["payload"])
    assert payload == json.dumps(st, sort_keys=True, separators=(",", ":")).encode()
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert [sig["keyid"] for sig in env["signatures"]] == [w1.key_id]


def test_the_provenance_record_is_slsa_v1_shaped_field_for_field():
    """Third parties read this record (slsa-verifier, in-toto tooling): every field pinned."""
    st = _provenance(params=_params(eval="sha256:" + "f" * 64))
    assert st == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "model.onnx", "digest": {"sha256": "a" * 64}},
            {"name": "tokenizer.json", "digest": {"sha256": "b" * 64}},
        ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://shipyard.dev/build/v1",
                "externalParameters": _params(eval="sha256:" + "f" * 64).as_dict(),
                "internalParameters": {"toolchain": {"onnxruntime": "1.32.0", "python": "3.11"}},
                "resolvedDependencies": [
                    {"name": "source", "digest": {"sha256": "d" * 64}},
                    {"name": "calibration", "digest": {"sha256": "e" * 64}},
                    {"name": "eval", "digest": {"sha256": "f" * 64}},
                ],
            },
            "runDetails": {
                "builder": {"id": "https://shipyard.dev/workers/w1"},
                "metadata": {
                    "startedOn": "2026-11-29T10:00:00Z",
                    "finishedOn": "2026-11-29T10:01:00Z",
                },
                "byproducts": [{"name": "gate", "content": {"cosine_min": 0.99}}],
            },
        },
    }


def test_the_verification_record_field_for_field():
    st = pv.verification_statement(
        subject="m/v3/onnx-int8", manifest_digest=MANIFEST, verifier="w2", builder="w1",
        passed=False, metrics={"z": 1.0, "a": 0.5}, thresholds={"a": 0.9},
    )  # fmt: skip
    assert st == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m/v3/onnx-int8", "digest": {"sha256": "c" * 64}}],
        "predicateType": "https://shipyard.dev/attestations/verification/v1",
        "predicate": {
            "verifier": {"id": "https://shipyard.dev/workers/w2"},
            "builder": {"id": "https://shipyard.dev/workers/w1"},
            "checks": ["signature", "golden", "gate"],
            "passed": False,
            "metrics": {"a": 0.5, "z": 1.0},
            "thresholds": {"a": 0.9},
            "reason": "",
        },
    }


def test_envelopes_are_written_with_sorted_keys(w1):
    raw = pv.sign_statement(_provenance(), w1)
    assert raw == json.dumps(json.loads(raw), sort_keys=True).encode()


def test_a_parameter_mismatch_names_both_sides(w1, w1_trust):
    with pytest.raises(Unprocessable) as err:
        _check(pv.sign_statement(_provenance(), w1), w1_trust, params=_params(version=9))
    signed = json.loads(json.dumps(_params().as_dict(), sort_keys=True))  # as the worker signed it
    assert f"parameters {signed} are not the job's {_params(version=9).as_dict()}" in str(err.value)
