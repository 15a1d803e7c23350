"""TensorRT build decisions for TensorRT 10 and 11 (pure; no GPU needed)."""

import importlib.util

import pytest

from builder.errors import TargetBuildError
from builder.targets.tensorrt import plan_build, preflight


def test_tensorrt_11_is_strongly_typed_without_precision_flags():
    plan = plan_build("11.1.0", "fp16", compute_capability="9.0", max_batch=64, max_seq=256)
    assert plan.strongly_typed
    assert plan.builder_flags == ()
    assert plan.autocast_fp16 and not plan.qdq_int8
    int8 = plan_build("11.1.0", "int8", compute_capability="9.0", max_batch=64, max_seq=256)
    assert int8.qdq_int8 and not int8.autocast_fp16 and int8.builder_flags == ()


def test_tensorrt_10_12_opts_into_strong_typing():
    plan = plan_build("10.13.0.35", "fp16", compute_capability="8.9", max_batch=32, max_seq=128)
    assert plan.strongly_typed and plan.builder_flags == ()


def test_old_tensorrt_10_uses_weak_typing_flags():
    assert plan_build(
        "10.4.0", "fp16", compute_capability="8.6", max_batch=8, max_seq=64
    ).builder_flags == ("FP16",)
    plan = plan_build("10.4.0", "int8", compute_capability="8.6", max_batch=8, max_seq=64)
    assert plan.builder_flags == ("FP16", "INT8") and plan.qdq_int8 and not plan.strongly_typed


def test_compatibility_options_recorded_in_requires():
    plan = plan_build(
        "10.13.0",
        "fp16",
        compute_capability="9.0",
        max_batch=64,
        max_seq=256,
        hardware_compatible=True,
        version_compatible=True,
    )
    assert "VERSION_COMPATIBLE" in plan.builder_flags
    req = plan.requires("9.0", gpu_memory_mb=1024)
    assert req.hardware_compatibility == "ampere_plus"
    assert (
        req.tensorrt_version_compatible
        and req.tensorrt == "10.13.0"
        and req.compute_capability == "9.0"
    )


def test_profiles_cover_traffic_shapes():
    plan = plan_build("11.0.0", "fp16", compute_capability="9.0", max_batch=64, max_seq=256)
    assert [p.opt for p in plan.profiles] == [(1, 16), (32, 64)]
    assert all(p.min == (1, 1) and p.max == (64, 256) for p in plan.profiles)


@pytest.mark.parametrize(
    ("version", "precision", "cc", "hw", "match"),
    [
        ("8.6.1", "fp16", "8.6", False, "too old"),
        ("10.13.0", "fp8", "9.0", False, "not supported"),
        ("10.13.0", "fp16", "7.5", True, "sm_80 or newer"),
        ("ten", "fp16", "9.0", False, "cannot parse"),
    ],
)
def test_refusals(version, precision, cc, hw, match):
    with pytest.raises(TargetBuildError, match=match):
        plan_build(
            version,
            precision,
            compute_capability=cc,
            max_batch=8,
            max_seq=8,
            hardware_compatible=hw,
        )


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_preflight_explains_missing_tensorrt_here():
    reason = preflight()
    assert reason is not None and "GPU" in reason


@pytest.mark.gpu
def test_gpu_available_for_tensorrt():
    assert preflight() is None
