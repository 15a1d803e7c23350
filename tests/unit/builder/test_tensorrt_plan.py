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
        compat=["version", "hardware"],
    )
    assert "VERSION_COMPATIBLE" in plan.builder_flags
    req = plan.requires("9.0", "NVIDIA H100", 1024, os="linux", arch="x86_64")
    assert req.hardware_compatibility == "ampere_plus"
    assert (
        req.tensorrt_version_compatible
        and req.tensorrt == "10.13.0"
        and req.compute_capability == "9.0"
    )
    assert (req.os, req.arch, req.gpu_name, req.gpu_memory_mb) == (
        ["linux"],
        ["x86_64"],
        "NVIDIA H100",
        1024,
    )


@pytest.mark.parametrize(
    ("compat", "level", "flag"),
    [
        ((), "none", False),
        (["none"], "none", False),
        (["version"], "none", True),
        (["same-cc"], "same_compute_capability", False),
        ("hardware,version", "ampere_plus", True),
    ],
)
def test_trt_compat_choices(compat, level, flag):
    plan = plan_build(
        "11.4.0", "int8", compute_capability="8.6", max_batch=8, max_seq=8, compat=compat
    )
    assert plan.hardware_compatibility == level
    assert plan.version_compatible is flag
    assert ("VERSION_COMPATIBLE" in plan.builder_flags) is flag


def test_profiles_cover_traffic_shapes():
    plan = plan_build("11.0.0", "fp16", compute_capability="9.0", max_batch=64, max_seq=256)
    assert [p.opt for p in plan.profiles] == [(1, 16), (32, 64)]
    assert all(p.min == (1, 1) and p.max == (64, 256) for p in plan.profiles)


@pytest.mark.parametrize(
    ("version", "precision", "cc", "compat", "match"),
    [
        ("8.6.1", "fp16", "8.6", (), "too old"),
        ("10.13.0", "fp8", "9.0", (), "not supported"),
        ("10.13.0", "fp16", "7.5", ["hardware"], "discrete sm_80 or newer"),
        ("10.13.0", "fp16", "8.7", ["hardware"], "discrete sm_80 or newer"),  # Jetson Orin
        ("11.4.0", "fp16", "9.0", ["hardware", "same-cc"], "pick one"),
        ("11.4.0", "fp16", "9.0", ["lean"], "unknown --trt-compat lean"),
        ("ten", "fp16", "9.0", (), "cannot parse"),
    ],
)
def test_refusals(version, precision, cc, compat, match):
    with pytest.raises(TargetBuildError, match=match):
        plan_build(
            version,
            precision,
            compute_capability=cc,
            max_batch=8,
            max_seq=8,
            compat=compat,
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
