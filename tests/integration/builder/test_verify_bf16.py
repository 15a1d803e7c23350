"""A verifying worker holds a bundle's BF16 claim (``bf16_gated``) to the gate in BF16 where it
can: a worker that says its bundle passed in BF16 when it did not is caught, because nodes with
native BF16 would run exactly those numerics."""

from __future__ import annotations

import msgspec
import pytest

from artifacts.bundle import read_manifest, verify_bundle, write_bundle
from artifacts.openvino_config import cpu_has_native_bf16
from artifacts.signing import load_signing_key
from builder.verify import VerifySpec, verify_bundle_quality
from tests.factories import TINY_THRESHOLDS


def _spec(bundle_dir, model_dir, task) -> VerifySpec:
    return VerifySpec(
        bundle_dir=str(bundle_dir),
        model_dir=str(model_dir),
        task=task,
        thresholds=TINY_THRESHOLDS[task],
        eval_limit=300 if task == "rerank" else 120,
    )


def _claiming_bf16(src, dest, key_file):
    """The same bundle, its manifest now saying the BF16 gate passed (signed again)."""
    m = read_manifest(src)
    runtime = dict(m.target.runtime) | {"bf16_gated": "true"}
    forged = msgspec.structs.replace(m, target=msgspec.structs.replace(m.target, runtime=runtime))
    files = {f.path: src / f.path for f in m.files}
    write_bundle(dest, forged, files, key=load_signing_key(key_file))
    return dest


def test_a_false_bf16_claim_fails_verification(tiny_builds, tiny_models, publisher_keys, tmp_path):
    dest, _ = tiny_builds["embedding"]
    m = read_manifest(dest / "openvino-int8")
    if m.target.runtime.get("bf16_gated") != "false":
        pytest.skip("needs a bundle whose BF16 numerics failed the gate (a native BF16 build host)")
    honest = verify_bundle_quality(
        verify_bundle(dest / "openvino-int8", None),
        _spec(dest, tiny_models["embedding"], "embedding"),
    )
    assert honest.passed, honest.reason
    forged = _claiming_bf16(dest / "openvino-int8", tmp_path / "forged", publisher_keys[0])
    verdict = verify_bundle_quality(
        verify_bundle(forged, None), _spec(forged, tiny_models["embedding"], "embedding")
    )
    assert not verdict.passed and "bf16" in verdict.reason, verdict.reason


def test_an_honest_bf16_claim_passes_where_it_can_be_checked(tiny_builds, tiny_models, monkeypatch):
    task = "classify"
    dest, _ = tiny_builds[task]
    bundle = verify_bundle(dest / "openvino-int8", None)
    if bundle.manifest.target.runtime.get("bf16_gated") != "true":
        pytest.skip("the build host recorded no passing BF16 verdict")
    if cpu_has_native_bf16():
        verdict = verify_bundle_quality(bundle, _spec(dest, tiny_models[task], task))
        assert verdict.passed and not verdict.retry, verdict.reason
        assert "bf16_golden_worst" in verdict.metrics
    # a host whose OpenVINO would run the claim in f32 gives no verdict: another worker must
    monkeypatch.setattr("builder.verify.cpu_has_native_bf16", lambda: False)
    verdict = verify_bundle_quality(bundle, _spec(dest, tiny_models[task], task))
    assert not verdict.passed and verdict.retry and "bf16_gated" in verdict.reason


def test_a_pinned_precision_other_than_f32_is_refused(
    tiny_builds, tiny_models, publisher_keys, tmp_path
):
    """A non-BF16 verifier would check such a pin in f32 while BF16 nodes ran the pin."""
    dest, _ = tiny_builds["classify"]
    src = dest / "openvino-int8"
    m = read_manifest(src)
    runtime = dict(m.target.runtime) | {"inference_precision": "bf16", "bf16_gated": "false"}
    forged = msgspec.structs.replace(m, target=msgspec.structs.replace(m.target, runtime=runtime))
    write_bundle(
        tmp_path / "pinned",
        forged,
        {f.path: src / f.path for f in m.files},
        key=load_signing_key(publisher_keys[0]),
    )
    verdict = verify_bundle_quality(
        verify_bundle(tmp_path / "pinned", None),
        _spec(tmp_path, tiny_models["classify"], "classify"),
    )
    assert not verdict.passed and not verdict.retry and "pins inference_precision" in verdict.reason
