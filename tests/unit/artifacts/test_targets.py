"""The compatibility table: every excluded bundle carries its reason."""

import pytest

from artifacts.manifest import Requires
from artifacts.targets import SelectionPolicy, check_requirements, rank_bundles, target_spec
from tests.factories import cpu_node, default_requires, gpu_node, make_manifest

ALL = ["tensorrt-fp16", "onnx-fp16", "openvino-int8", "onnx-int8", "onnx-fp32"]


def version(*targets: str, **kw):
    return [make_manifest(t, **kw) for t in targets]


def reasons(ranking):
    return {e.target: e.reason for e in ranking.excluded}


def test_cpu_node_with_vnni_prefers_onnx_int8_and_explains_gpu_exclusions():
    r = rank_bundles(cpu_node(), version(*ALL))
    assert [c.target for c in r.eligible] == ["onnx-int8", "openvino-int8", "onnx-fp32"]
    why = reasons(r)
    assert "built for sm_90 / TensorRT 10.13.0; node has no NVIDIA GPU" in why["tensorrt-fp16"]
    assert "CUDAExecutionProvider" in why["onnx-fp16"]
    assert set(why) == {"tensorrt-fp16", "onnx-fp16"}


def test_cpu_node_without_vnni_excludes_int8_onnx_with_reason():
    r = rank_bundles(cpu_node(vnni=False), version("onnx-int8", "onnx-fp32"))
    assert [c.target for c in r.eligible] == ["onnx-fp32"]
    reason = reasons(r)["onnx-int8"]
    assert "avx512_vnni" in reason
    assert "node has avx2" in reason


def test_onnx_int8_built_with_reduce_range_runs_on_avx2():
    req = Requires(onnxruntime=">=1.17", cpu_isa_any=["avx2", "asimd"])
    r = rank_bundles(cpu_node(vnni=False), [make_manifest("onnx-int8", requires=req)])
    assert [c.target for c in r.eligible] == ["onnx-int8"]


def test_arm64_node_with_dot_product():
    r = rank_bundles(
        cpu_node(arch="aarch64", openvino=False), version("openvino-int8", "onnx-int8", "onnx-fp32")
    )
    assert [c.target for c in r.eligible] == ["onnx-int8", "onnx-fp32"]
    assert "OpenVINO is not installed" in reasons(r)["openvino-int8"]


def test_missing_openvino():
    r = rank_bundles(cpu_node(openvino=False), version("openvino-int8"))
    assert r.eligible == []
    assert "OpenVINO is not installed" in reasons(r)["openvino-int8"]


def test_openvino_too_old():
    node = cpu_node()
    node.openvino = "2023.3.0"
    r = rank_bundles(node, version("openvino-int8"))
    assert "needs OpenVINO >=2024.0, node has 2023.3.0" in reasons(r)["openvino-int8"]


def test_matching_gpu_node_prefers_tensorrt():
    r = rank_bundles(gpu_node("9.0", "10.13.0"), version(*ALL))
    assert [c.target for c in r.eligible] == [
        "tensorrt-fp16",
        "onnx-fp16",
        "onnx-int8",
        "openvino-int8",
        "onnx-fp32",
    ]
    assert r.excluded == []


def test_sm86_node_vs_sm90_engine():
    r = rank_bundles(
        gpu_node("8.6", "10.13.0", "NVIDIA A10"), version("tensorrt-fp16", "onnx-fp16")
    )
    assert [c.target for c in r.eligible] == ["onnx-fp16"]
    reason = reasons(r)["tensorrt-fp16"]
    assert "built for sm_90" in reason
    assert "node has sm_86 (NVIDIA A10)" in reason


def test_hardware_compatible_engine_runs_on_other_ampere_plus_gpu():
    req = Requires(
        cuda=True,
        compute_capability="9.0",
        tensorrt="10.13.0",
        hardware_compatibility="ampere_plus",
    )
    r = rank_bundles(gpu_node("8.6", "10.13.0"), [make_manifest("tensorrt-fp16", requires=req)])
    assert [c.target for c in r.eligible] == ["tensorrt-fp16"]
    r = rank_bundles(
        gpu_node("7.5", "10.13.0", "Tesla T4"), [make_manifest("tensorrt-fp16", requires=req)]
    )
    assert "needs a discrete Ampere or newer GPU" in reasons(r)["tensorrt-fp16"]


def test_same_compute_capability_engine():
    req = Requires(
        cuda=True,
        compute_capability="8.9",
        tensorrt="10.13.0",
        hardware_compatibility="same_compute_capability",
    )
    assert rank_bundles(
        gpu_node("8.9", "10.13.0", "NVIDIA L4"), [make_manifest("tensorrt-int8", requires=req)]
    ).eligible
    r = rank_bundles(gpu_node("9.0", "10.13.0"), [make_manifest("tensorrt-int8", requires=req)])
    assert "built for any sm_89 GPU" in reasons(r)["tensorrt-int8"]


def test_tensorrt_version_mismatch():
    r = rank_bundles(gpu_node("9.0", "10.14.1"), version("tensorrt-fp16"))
    reason = reasons(r)["tensorrt-fp16"]
    assert "node has TensorRT 10.14.1" in reason
    assert "exact TensorRT version" in reason


def test_version_compatible_engine_accepts_newer_runtime_only():
    req = Requires(
        cuda=True, compute_capability="9.0", tensorrt="10.13.0", tensorrt_version_compatible=True
    )
    m = [make_manifest("tensorrt-fp16", requires=req)]
    assert rank_bundles(gpu_node("9.0", "11.1.0"), m).eligible
    r = rank_bundles(gpu_node("9.0", "10.8.0"), m)
    assert "node's TensorRT 10.8.0 is older" in reasons(r)["tensorrt-fp16"]


def test_tensorrt_not_installed():
    r = rank_bundles(gpu_node("9.0", None), version("tensorrt-fp16"))
    assert "TensorRT is not installed" in reasons(r)["tensorrt-fp16"]


def test_failed_quality_gate_is_excluded():
    r = rank_bundles(
        cpu_node(), [make_manifest("onnx-int8", passed=False), make_manifest("onnx-fp32")]
    )
    assert [c.target for c in r.eligible] == ["onnx-fp32"]
    assert "quality gate did not pass" in reasons(r)["onnx-int8"]


def test_policy_deny_allow_prefer_require_gpu():
    bundles = version(*ALL)
    r = rank_bundles(cpu_node(), bundles, SelectionPolicy(deny=["onnx-int8"]))
    assert r.best.target == "openvino-int8"
    assert reasons(r)["onnx-int8"] == "denied by policy (backends.deny)"

    r = rank_bundles(cpu_node(), bundles, SelectionPolicy(allow=["onnx-fp32"]))
    assert [c.target for c in r.eligible] == ["onnx-fp32"]
    assert "allow list" in reasons(r)["onnx-int8"]

    r = rank_bundles(cpu_node(), bundles, SelectionPolicy(prefer=["onnx-fp32", "onnx-int8"]))
    assert [c.target for c in r.eligible] == ["onnx-fp32", "onnx-int8", "openvino-int8"]

    r = rank_bundles(cpu_node(), bundles, SelectionPolicy(require_gpu=True))
    assert r.eligible == []
    assert reasons(r)["onnx-fp32"] == "CPU target refused: require_gpu = true"
    assert "no NVIDIA GPU" in reasons(r)["tensorrt-fp16"]


def test_every_bundle_is_either_eligible_or_has_a_reason():
    nodes = [
        cpu_node(),
        cpu_node(vnni=False),
        cpu_node(arch="aarch64"),
        gpu_node(),
        gpu_node("8.0", "10.0.1"),
    ]
    for node in nodes:
        r = rank_bundles(node, version(*ALL))
        assert len(r.eligible) + len(r.excluded) == len(ALL)
        assert all(e.reason for e in r.excluded)


def test_unknown_target_and_onnxruntime_version():
    assert check_requirements("onnx-fp32", Requires(onnxruntime=">=9.0"), cpu_node()) == [
        "needs onnxruntime >=9.0, node has 1.32.0"
    ]
    with pytest.raises(ValueError, match="unknown target"):
        target_spec("tensorrt-fp64")
    assert default_requires("onnx-fp32").onnxruntime == ">=1.17"
