"""TensorRT portability rules (artifacts/targets.py), one table per rule, each from the NVIDIA
document that states it:

* platform — TensorRT 11.4 Support Matrix, "Engine Portability": serialized engines are not
  portable across platforms;
* version — same page: version-compatible engines run on newer runtimes of the same major, and
  across majors only 10 -> 11 and 8 -> 10; Developer Guide "Version Compatibility": from 8.6;
* hardware — Developer Guide "Hardware Compatibility": Ampere and later, not on DRIVE OS or
  JetPack; ``HardwareCompatibilityLevel``: NONE promises only the GPU the engine was built on,
  SAME_COMPUTE_CAPABILITY any GPU of that compute capability.
"""

import pytest

from artifacts.manifest import Requires
from artifacts.targets import INTEGRATED_GPU_CC, TRT_CROSS_MAJOR, check_requirements
from tests.factories import cpu_node, gpu_node


def trt(**kw) -> Requires:
    base = {
        "cuda": True,
        "compute_capability": "9.0",
        "tensorrt": "11.4.0",
        "gpu_name": "NVIDIA H100",
    }
    return Requires(**{**base, **kw})


def node(cc="9.0", tensorrt="11.4.0", name="NVIDIA H100", *, arch="x86_64", os="linux"):
    n = gpu_node(cc, tensorrt, name)
    n.arch, n.os = arch, os
    return n


# ---- platform --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "os", "ok"),
    [
        ("x86_64", "linux", True),
        ("aarch64", "linux", False),  # an x86_64-built engine on a Grace Hopper node
        ("x86_64", "windows", False),
    ],
)
def test_engines_run_only_on_the_platform_that_built_them(arch, os, ok):
    req = trt(arch=["x86_64"], os=["linux"])
    reasons = check_requirements("tensorrt-fp16", req, node(arch=arch, os=os))
    assert (reasons == []) is ok, reasons
    if arch != "x86_64":
        assert "needs CPU arch x86_64, node is aarch64" in reasons
    if os != "linux":
        assert "needs OS linux, node runs windows" in reasons


def test_unknown_node_os_is_refused_for_an_os_bound_bundle():
    n = node()
    n.os = ""
    assert "needs OS linux, node runs unknown" in check_requirements(
        "tensorrt-fp16", trt(os=["linux"]), n
    )


# ---- version ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "runtime", "ok"),
    [
        ("10.13.0", "10.16.1", True),  # later runtime, same major
        ("11.0.0", "11.4.0", True),
        ("10.13.0", "11.4.0", True),  # 10 -> 11: supported pair
        ("8.6.1", "10.13.0", True),  # 8 -> 10: supported pair
        ("8.6.1", "11.4.0", False),  # 8 -> 11: "no other combination across major versions"
        ("10.13.0", "12.0.0", False),  # a future major: not in the table
        ("11.4.0", "10.16.1", False),  # never an older runtime
        ("11.4.0", "11.3.9", False),
        ("8.5.3", "8.6.1", False),  # version compatibility starts at 8.6
    ],
)
def test_version_compatible_engines_follow_the_supported_pairs(built, runtime, ok):
    req = trt(tensorrt=built, tensorrt_version_compatible=True)
    reasons = check_requirements("tensorrt-int8", req, node(tensorrt=runtime))
    assert (reasons == []) is ok, reasons


def test_cross_major_refusal_names_both_majors():
    req = trt(tensorrt="10.13.0", tensorrt_version_compatible=True)
    (reason,) = check_requirements("tensorrt-fp16", req, node(tensorrt="12.0.0"))
    assert reason.endswith("TensorRT 10 engines are not supported on a TensorRT 12 runtime")


def test_the_cross_major_table_is_the_documented_one():
    assert frozenset({(8, 10), (10, 11)}) == TRT_CROSS_MAJOR


# ---- hardware --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "name", "ok"),
    [
        ("8.0", "NVIDIA A100", True),
        ("12.0", "NVIDIA RTX PRO 6000", True),
        ("8.7", "Orin", False),  # Jetson AGX Orin: Ampere, but integrated
        ("10.1", "Thor", False),  # DRIVE Thor (CUDA 12 numbering)
        ("11.0", "Thor", False),  # DRIVE/Jetson Thor (CUDA 13 numbering)
        ("7.2", "Xavier", False),
        ("7.5", "Tesla T4", False),
    ],
)
def test_ampere_plus_excludes_jetson_and_drive(cc, name, ok):
    req = trt(hardware_compatibility="ampere_plus")
    reasons = check_requirements("tensorrt-fp16", req, node(cc, name=name))
    assert (reasons == []) is ok, reasons


def test_integrated_gpu_table():
    assert {"8.7", "7.2", "10.1", "11.0"} <= INTEGRATED_GPU_CC
    assert not {"8.0", "8.6", "8.9", "9.0", "10.0", "12.0"} & INTEGRATED_GPU_CC


@pytest.mark.parametrize(
    ("cc", "name", "ok"),
    [
        ("9.0", "NVIDIA H100", True),
        ("9.0", " NVIDIA H100 ", True),  # nvidia-smi padding
        ("9.0", "NVIDIA H200", False),  # same compute capability, another model
        ("8.9", "NVIDIA H100", False),
    ],
)
def test_plain_engines_need_the_build_gpu_model(cc, name, ok):
    reasons = check_requirements("tensorrt-fp16", trt(), node(cc, name=name))
    assert (reasons == []) is ok, reasons


def test_another_model_is_refused_with_the_way_out():
    (reason,) = check_requirements("tensorrt-fp16", trt(), node("9.0", name="NVIDIA H200"))
    assert reason == (
        "built for sm_90 (NVIDIA H100) / TensorRT 11.4.0; node has sm_90 (NVIDIA H200) — a plain "
        "engine is guaranteed only on the GPU model that built it (build it with --trt-compat "
        "same-cc to relax this)"
    )


@pytest.mark.parametrize(("name", "ok"), [("NVIDIA H200", True), ("NVIDIA H100", True)])
def test_same_compute_capability_engines_run_on_any_model_of_it(name, ok):
    req = trt(hardware_compatibility="same_compute_capability")
    assert (check_requirements("tensorrt-fp16", req, node("9.0", name=name)) == []) is ok


def test_old_bundles_without_a_gpu_name_keep_the_compute_capability_rule():
    assert check_requirements("tensorrt-fp16", trt(gpu_name=None), node(name="NVIDIA H200")) == []


def test_the_engine_runs_if_any_gpu_of_the_node_can_run_it():
    n = node("9.0", name="NVIDIA H200")
    n.gpus.append(n.gpus[0].__class__(name="NVIDIA H100", compute_capability="9.0", index=1))
    assert check_requirements("tensorrt-fp16", trt(), n) == []
    assert check_requirements("tensorrt-fp16", trt(), cpu_node()) != []


@pytest.mark.parametrize("cc", ["9.x", "sm90", "", "9.0.1.2"])
def test_a_malformed_compute_capability_is_an_exclusion_not_a_crash(cc):
    from artifacts.targets import rank_bundles
    from tests.factories import make_manifest

    req = trt(compute_capability=cc)
    bundles = [make_manifest("tensorrt-fp16", requires=req), make_manifest("onnx-fp32")]
    r = rank_bundles(node(), bundles)
    assert [c.target for c in r.eligible] == ["onnx-fp32"] or cc == ""
    for hw in ("ampere_plus", "same_compute_capability"):
        check_requirements(
            "tensorrt-fp16", trt(compute_capability=cc, hardware_compatibility=hw), node()
        )
