"""Every requirement kind in ``rank_bundles``, at its boundary, and the invariant that every
bundle comes back either eligible or excluded with a reason (a hypothesis property over random
nodes × bundle sets). These pin the behaviour a node's safety depends on: a bundle it cannot run
is never offered (illegal instruction, wrong engine), and nothing silently vanishes."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts.manifest import Requires
from artifacts.targets import (
    TARGETS,
    GpuInfo,
    NodeCapabilities,
    SelectionPolicy,
    check_requirements,
    rank_bundles,
)
from tests.factories import cpu_node, gpu_node, make_manifest


def _unknown(target: str = "tpu-int4"):
    m = make_manifest("onnx-fp32")
    return msgspec.structs.replace(m, target=msgspec.structs.replace(m.target, id=target))


def _targets(ranking) -> tuple[list[str], dict[str, str]]:
    return [c.target for c in ranking.eligible], {e.target: e.reason for e in ranking.excluded}


# ---- policy and unknown ids never hide the bundles after them --------------------------------


def test_an_unknown_target_id_is_excluded_and_the_bundles_after_it_still_rank():
    r = rank_bundles(cpu_node(), [_unknown(), make_manifest("onnx-int8"), make_manifest()])
    eligible, why = _targets(r)
    assert eligible == ["onnx-int8", "onnx-fp32"] and why == {"tpu-int4": "unknown target id"}


@pytest.mark.parametrize(
    ("policy", "eligible", "excluded"),
    [
        (SelectionPolicy(deny=["onnx-int8"]), ["openvino-int8", "onnx-fp32"], {"onnx-int8": "denied"}),
        (SelectionPolicy(allow=["onnx-fp32"]), ["onnx-fp32"], {"onnx-int8": "allow list", "openvino-int8": "allow list"}),
        (SelectionPolicy(require_gpu=True), [], dict.fromkeys(("onnx-int8", "openvino-int8", "onnx-fp32"), "require_gpu")),
        (SelectionPolicy(prefer=["onnx-fp32", "openvino-int8"]), ["onnx-fp32", "openvino-int8", "onnx-int8"], {}),
    ],
)  # fmt: skip
def test_policy_keeps_every_later_bundle_accounted_for(policy, eligible, excluded):
    bundles = [make_manifest(t) for t in ("onnx-int8", "openvino-int8", "onnx-fp32")]
    r = rank_bundles(cpu_node(), bundles, policy)
    got, why = _targets(r)
    assert got == eligible
    assert set(why) == set(excluded)
    for target, word in excluded.items():
        assert word in why[target]
    notes = {c.target: c.note for c in r.eligible}
    for t in policy.prefer:
        assert notes[t] == "preferred by policy"
    if not policy.prefer and eligible:
        assert notes[eligible[0]] == TARGETS[eligible[0]].description


def test_a_failed_gate_is_excluded_even_when_the_node_could_run_it():
    r = rank_bundles(cpu_node(), [make_manifest(passed=False), make_manifest("onnx-int8")])
    assert _targets(r) == (
        ["onnx-int8"],
        {"onnx-fp32": "its quality gate did not pass at build time"},
    )


def test_eligible_bundles_carry_their_spec():
    (c,) = rank_bundles(cpu_node(), [make_manifest("openvino-int8")]).eligible
    assert (c.target, c.backend, c.precision, c.device) == (
        "openvino-int8",
        "openvino",
        "int8",
        "cpu",
    )


# ---- host requirements ----------------------------------------------------------------------


def test_every_required_cpu_flag_must_be_present():
    req = Requires(cpu_isa_all=["avx512f", "amx_int8"])
    assert check_requirements("onnx-int8", req, cpu_node()) == ["needs CPU features amx_int8"]
    node = cpu_node()
    node.cpu_isa = [*node.cpu_isa, "amx_int8"]
    assert check_requirements("onnx-int8", req, node) == []


def test_arch_is_enforced():
    req = Requires(arch=["x86_64"])
    assert check_requirements("onnx-fp32", req, cpu_node()) == []
    assert check_requirements("onnx-fp32", req, cpu_node(arch="aarch64")) == [
        "needs CPU arch x86_64, node is aarch64"
    ]
    unknown = cpu_node()
    unknown.arch = ""
    assert check_requirements("onnx-fp32", req, unknown) == [
        "needs CPU arch x86_64, node is unknown"
    ]


def test_any_of_the_int8_flags_is_enough_and_none_is_refused():
    req = Requires(cpu_isa_any=["avx512_vnni", "amx_int8"])
    assert check_requirements("onnx-int8", req, cpu_node()) == []
    bare = cpu_node(vnni=False)
    bare.cpu_isa = ["sse4_2"]
    assert check_requirements("onnx-int8", req, bare) == [
        "needs one of avx512_vnni/amx_int8 for fast, saturation-free INT8 (node has none of them)"
    ]


@pytest.mark.parametrize(("node_mb", "ok"), [(4095, False), (4096, True), (0, True)])
def test_host_memory_boundary(node_mb, ok):
    node = cpu_node()
    node.memory_mb = node_mb  # 0: unknown, not refused
    reasons = check_requirements("onnx-fp32", Requires(memory_mb=4096), node)
    assert reasons == ([] if ok else [f"needs 4096 MB memory, node has {node_mb} MB"])


# ---- runtimes -------------------------------------------------------------------------------


def test_onnxruntime_missing_or_too_old_or_without_a_provider():
    node = cpu_node()
    node.onnxruntime = None
    assert check_requirements("onnx-fp32", Requires(onnxruntime=">=1.17"), node) == [
        "onnxruntime is not installed (pip install 'shipyard[edge]')"
    ]
    assert check_requirements("onnx-fp32", Requires(onnxruntime=""), node) == [
        "onnxruntime is not installed (pip install 'shipyard[edge]')"
    ]
    assert check_requirements("onnx-fp32", Requires(onnxruntime=">=1.32.0"), cpu_node()) == []
    assert check_requirements("onnx-fp32", Requires(onnxruntime=">1.32.0"), cpu_node()) == [
        "needs onnxruntime >1.32.0, node has 1.32.0"
    ]
    req = Requires(onnxruntime_providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (
        check_requirements("onnx-fp16", req, cpu_node())
        == [
            "needs onnxruntime providers CUDAExecutionProvider",
            "needs an NVIDIA GPU with CUDA; node has none",
        ][:1]
    )


@pytest.mark.parametrize(
    ("spec", "installed"),
    [("not a specifier", "1.32.0"), (">=1.17", "not-a-version"), ("==1.*.x", "1.32.0")],
)
def test_malformed_versions_or_specifiers_are_never_satisfied(spec, installed):
    node = cpu_node()
    node.onnxruntime = installed
    assert check_requirements("onnx-fp32", Requires(onnxruntime=spec), node) == [
        f"needs onnxruntime {spec}, node has {installed}"
    ]


def test_openvino_missing_old_or_without_the_device():
    req = Requires(openvino=">=2024.0", openvino_devices=["GPU", "NPU"])
    assert check_requirements("openvino-int8", req, cpu_node(openvino=False)) == [
        "OpenVINO is not installed (pip install openvino)"
    ]
    assert check_requirements("openvino-int8", req, cpu_node()) == [
        "needs an OpenVINO device of GPU/NPU"
    ]
    assert check_requirements("openvino-int8", Requires(openvino=">=2030"), cpu_node()) == [
        "needs OpenVINO >=2030, node has 2026.4.1"
    ]
    ok = Requires(openvino=">=2024.0", openvino_devices=["NPU", "CPU"])
    assert check_requirements("openvino-int8", ok, cpu_node()) == []
    assert check_requirements("openvino-int8", Requires(openvino=""), cpu_node()) == []


def test_cuda_needs_a_gpu_for_non_tensorrt_targets():
    assert check_requirements("onnx-fp16", Requires(cuda=True), cpu_node()) == [
        "needs an NVIDIA GPU with CUDA; node has none"
    ]
    assert check_requirements("onnx-fp16", Requires(cuda=True), gpu_node()) == []


# ---- TensorRT ---------------------------------------------------------------------------------


def _trt(**kw) -> Requires:
    base = {"cuda": True, "compute_capability": "9.0", "tensorrt": "10.13.0"}
    return Requires(**{**base, **kw})


@pytest.mark.parametrize("target", ["tensorrt-fp16", "tensorrt-int8"])
def test_both_tensorrt_targets_follow_the_engine_rules(target):
    assert check_requirements(target, _trt(), gpu_node()) == []
    assert check_requirements(target, _trt(), gpu_node("8.9")) != []
    assert check_requirements(target, _trt(), cpu_node()) == [
        "built for sm_90 / TensorRT 10.13.0; node has no NVIDIA GPU"
    ]


@pytest.mark.parametrize(
    ("cc", "ok"), [("7.5", False), ("8.0", True), ("8.6", True), ("12.0", True)]
)
def test_ampere_plus_boundary_is_sm80(cc, ok):
    req = _trt(hardware_compatibility="ampere_plus")
    reasons = check_requirements("tensorrt-fp16", req, gpu_node(cc))
    assert (reasons == []) is ok, reasons
    if not ok:
        assert "needs a discrete Ampere or newer GPU (sm_80+, not Jetson/DRIVE)" in reasons[0]


@pytest.mark.parametrize(
    ("built", "node", "ok"),
    [
        ("8.5.3", "10.0.0", False),  # version compatibility needs >= 8.6 at build
        ("8.6.0", "8.6.0", True),
        ("8.6.0", "10.13.0", True),
        ("10.13.0", "10.12.9", False),  # never older
        ("10.13.0", "10.13.0", True),
    ],
)
def test_version_compatible_engines_run_on_the_same_or_newer_runtime(built, node, ok):
    req = _trt(tensorrt=built, tensorrt_version_compatible=True)
    reasons = check_requirements("tensorrt-fp16", req, gpu_node(tensorrt=node))
    assert (reasons == []) is ok, reasons


@pytest.mark.parametrize(
    ("node", "ok"),
    [
        ("10.13.0", True),
        ("10.13", True),
        ("10.13.0.35", False),
        ("10.13.1", False),
        ("10.14.0", False),
    ],
)
def test_plain_engines_need_the_exact_release(node, ok):
    reasons = check_requirements("tensorrt-fp16", _trt(), gpu_node(tensorrt=node))
    assert (reasons == []) is ok, reasons


def test_unparseable_tensorrt_versions_are_refused_and_missing_ones_accepted():
    assert check_requirements("tensorrt-fp16", _trt(), gpu_node(tensorrt="ten")) == [
        "built for sm_90 / TensorRT 10.13.0; cannot compare TensorRT versions with node's ten"
    ]
    assert check_requirements("tensorrt-fp16", _trt(tensorrt=None), gpu_node()) == []
    assert check_requirements("tensorrt-fp16", _trt(), gpu_node(tensorrt=None)) == [
        "built for sm_90 / TensorRT 10.13.0; TensorRT is not installed on this node"
    ]


@pytest.mark.parametrize(("gpu_mb", "ok"), [(16383, False), (16384, True)])
def test_gpu_memory_boundary(gpu_mb, ok):
    node = gpu_node()
    node.gpus = [GpuInfo(name="small", compute_capability="9.0", memory_mb=gpu_mb)]
    reasons = check_requirements("tensorrt-fp16", _trt(gpu_memory_mb=16384), node)
    assert reasons == ([] if ok else ["needs a GPU with >= 16384 MB memory"])


def test_same_compute_capability_engines_and_unknown_capability_descriptions():
    req = _trt(hardware_compatibility="same_compute_capability")
    assert check_requirements("tensorrt-fp16", req, gpu_node("9.0")) == []
    (reason,) = check_requirements("tensorrt-fp16", req, gpu_node("8.6", name="A10"))
    assert reason.startswith("built for any sm_90 GPU / TensorRT 10.13.0; node has sm_86 (A10)")
    (anon,) = check_requirements(
        "tensorrt-fp16", _trt(compute_capability=None, tensorrt=None), cpu_node()
    )
    assert anon == "built for an unknown GPU / TensorRT ?; node has no NVIDIA GPU"


def test_a_multi_gpu_node_runs_an_engine_for_any_of_its_gpus():
    node = gpu_node("8.6")
    node.gpus.append(GpuInfo(name="H100", compute_capability="9.0", memory_mb=81920, index=1))
    assert check_requirements("tensorrt-fp16", _trt(), node) == []


# ---- the invariant, over random nodes and bundle sets -----------------------------------------

ISA = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp"]
_requires = st.builds(
    Requires,
    arch=st.lists(st.sampled_from(["x86_64", "aarch64"]), max_size=2, unique=True),
    cpu_isa_all=st.lists(st.sampled_from(ISA), max_size=2, unique=True),
    cpu_isa_any=st.lists(st.sampled_from(ISA), max_size=3, unique=True),
    onnxruntime=st.sampled_from([None, ">=1.17", ">=9", "bogus"]),
    openvino=st.sampled_from([None, ">=2024.0", ">=2099"]),
    cuda=st.booleans(),
    compute_capability=st.sampled_from([None, "8.0", "8.6", "9.0"]),
    hardware_compatibility=st.sampled_from(["none", "same_compute_capability", "ampere_plus"]),
    tensorrt=st.sampled_from([None, "8.5.0", "10.13.0", "11.0.0"]),
    gpu_name=st.sampled_from([None, "NVIDIA H100", "NVIDIA A10"]),
    os=st.lists(st.sampled_from(["linux", "windows"]), max_size=2, unique=True),
    tensorrt_version_compatible=st.booleans(),
    gpu_memory_mb=st.sampled_from([0, 40000, 100000]),
    memory_mb=st.sampled_from([0, 4096, 1 << 20]),
)
_bundle = st.one_of(
    st.builds(
        lambda t, req, passed: make_manifest(t, requires=req, passed=passed),
        st.sampled_from(sorted(TARGETS)),
        _requires,
        st.booleans(),
    ),
    st.sampled_from(["tpu-int4", "onnx-int3"]).map(_unknown),
)
_node = st.builds(
    NodeCapabilities,
    arch=st.sampled_from(["x86_64", "aarch64", ""]),
    cpu_isa=st.lists(st.sampled_from(ISA), unique=True),
    memory_mb=st.sampled_from([0, 2048, 65536]),
    gpus=st.lists(
        st.builds(GpuInfo, name=st.just("g"), compute_capability=st.sampled_from(["7.5", "8.0", "8.6", "9.0"]),
                  memory_mb=st.sampled_from([24000, 81920])),
        max_size=2,
    ),
    tensorrt=st.sampled_from([None, "10.13.0", "11.0.0", "x"]),
    onnxruntime=st.sampled_from([None, "1.32.0"]),
    onnxruntime_providers=st.sampled_from([["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]]),
    openvino=st.sampled_from([None, "2026.4.1"]),
    openvino_devices=st.sampled_from([[], ["CPU"], ["CPU", "GPU"]]),
)  # fmt: skip
_policy = st.builds(
    SelectionPolicy,
    allow=st.lists(st.sampled_from(sorted(TARGETS)), max_size=3, unique=True),
    deny=st.lists(st.sampled_from(sorted(TARGETS)), max_size=2, unique=True),
    prefer=st.lists(st.sampled_from(sorted(TARGETS)), max_size=3, unique=True),
    require_gpu=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(node=_node, bundles=st.lists(_bundle, max_size=8), policy=_policy)
def test_every_bundle_is_eligible_or_excluded_with_a_reason(node, bundles, policy):
    r = rank_bundles(node, bundles, policy)
    assert len(r.eligible) + len(r.excluded) == len(bundles)
    assert (
        sorted(c.target for c in r.eligible) + sorted(e.target for e in r.excluded) != []
        or not bundles
    )
    assert all(e.reason for e in r.excluded)
    for c in r.eligible:  # what is offered, the node can run, and policy allows
        assert any(  # several bundles may share a target: one of them is runnable
            b.target.id == c.target
            and b.quality.passed
            and check_requirements(c.target, b.target.requires, node) == []
            for b in bundles
        )
        assert c.target not in policy.deny and (not policy.allow or c.target in policy.allow)
        assert not policy.require_gpu or c.device == "gpu"
    keys = [
        (
            policy.prefer.index(c.target) if c.target in policy.prefer else len(policy.prefer),
            TARGETS[c.target].rank,
        )
        for c in r.eligible
    ]
    assert keys == sorted(keys)  # best first: preference, then the default rank


# ---- the words an operator reads (exact: these messages are the "why" in /v1/status) ---------


def test_exact_reasons_for_host_requirements():
    node = cpu_node(vnni=False)
    req = Requires(
        arch=["x86_64", "aarch64"], cpu_isa_all=["avx512f", "amx_int8", "sse4_2"],
        cpu_isa_any=["avx512_vnni", "amx_int8"], onnxruntime_providers=["A", "B", "CPUExecutionProvider"],
    )  # fmt: skip
    node.arch = "riscv64"
    assert check_requirements("onnx-int8", req, node) == [
        "needs CPU arch x86_64/aarch64, node is riscv64",
        "needs CPU features avx512f, amx_int8",
        "needs one of avx512_vnni/amx_int8 for fast, saturation-free INT8 (node has avx2)",
        "needs onnxruntime providers A, B",
    ]
    big = cpu_node()
    assert (
        "(node has avx2, avx512f)"
        in check_requirements("onnx-int8", Requires(cpu_isa_any=["amx_int8"]), big)[0]
    )
    arm = cpu_node(arch="aarch64")
    assert (
        "(node has asimd)"
        in check_requirements("onnx-int8", Requires(cpu_isa_any=["amx_int8"]), arm)[0]
    )


def test_exact_reasons_for_tensorrt():
    node = gpu_node("8.6", name="A10")
    node.gpus.append(GpuInfo(name="L4", compute_capability="8.9", memory_mb=24000))
    assert check_requirements("tensorrt-fp16", _trt(), node) == [
        "built for sm_90 / TensorRT 10.13.0; node has sm_86 (A10), sm_89 (L4) — engines run only "
        "on the compute capability they were built for unless built hardware-compatible"
    ]
    assert check_requirements("tensorrt-fp16", _trt(), gpu_node(tensorrt="10.14.0")) == [
        "built for sm_90 / TensorRT 10.13.0; node has TensorRT 10.14.0 — a plain engine runs "
        "only on the exact TensorRT version that built it (build it VERSION_COMPATIBLE to relax this)"
    ]
    amp = _trt(hardware_compatibility="ampere_plus", tensorrt=None)
    assert check_requirements("tensorrt-fp16", amp, gpu_node("7.5", name="T4")) == [
        "built hardware-compatible (Ampere+) / TensorRT ?; needs a discrete Ampere or newer GPU "
        "(sm_80+, not Jetson/DRIVE), node has sm_75 (T4)"
    ]
    bare = _trt(compute_capability="8")
    assert check_requirements("tensorrt-fp16", bare, cpu_node())[0].startswith("built for sm_80 ")


def test_exact_reasons_in_the_ranking_and_the_unknown_target_message():
    r = rank_bundles(
        cpu_node(vnni=False),
        [make_manifest("onnx-int8", requires=Requires(cpu_isa_all=["x1", "x2"])), make_manifest("openvino-int8")],
        SelectionPolicy(allow=["onnx-int8"]),
    )  # fmt: skip
    why = {e.target: e.reason for e in r.excluded}
    assert why == {
        "onnx-int8": "onnx-int8: needs CPU features x1, x2",
        "openvino-int8": "not in policy allow list (backends.allow)",
    }
    from artifacts.targets import target_spec

    with pytest.raises(
        ValueError, match=r"known targets: tensorrt-int8, tensorrt-fp16, onnx-fp16,"
    ):
        target_spec("tpu")


def test_prerelease_runtimes_satisfy_a_plain_minimum():
    node = cpu_node()
    node.onnxruntime = "1.33.0.dev20261101"
    assert check_requirements("onnx-fp32", Requires(onnxruntime=">=1.17"), node) == []


def test_the_same_target_twice_ranks_without_error_in_input_order():
    a = make_manifest("onnx-int8")
    b = make_manifest("onnx-int8", name="other")
    r = rank_bundles(cpu_node(), [make_manifest(), a, b])
    assert [c.target for c in r.eligible] == ["onnx-int8", "onnx-int8", "onnx-fp32"]
