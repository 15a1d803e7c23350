"""The OpenVINO compile settings every node derives from a bundle's recorded runtime."""

from artifacts.openvino_config import compile_config


def test_precision_pinned_and_latency_hint_for_one_stream():
    c = compile_config({"inference_precision": "f32"}, threads=2)
    assert c == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 2,
        "NUM_STREAMS": 1,
    }


def test_dynamic_quantization_group_is_pinned_only_when_recorded():
    c = compile_config({"dynamic_quantization_group_size": "32"}, threads=4, streams=2)
    assert c["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 32
    assert c["PERFORMANCE_HINT"] == "THROUGHPUT" and c["NUM_STREAMS"] == 2
    assert c["INFERENCE_PRECISION_HINT"] == "f32"  # older bundles: f32, never the CPU's BF16
    off = compile_config({"dynamic_quantization_group_size": "0"}, threads=1)
    assert off["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 0


def test_the_setting_is_a_real_openvino_property():
    import openvino as ov

    core = ov.Core()
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" in core.get_property("CPU", "SUPPORTED_PROPERTIES")


def test_hostile_runtime_values_are_refused_with_the_key_named():
    import pytest

    from artifacts.errors import InputError

    for runtime, key in (
        ({"inference_precision": "u1"}, "inference_precision"),
        ({"dynamic_quantization_group_size": "abc"}, "dynamic_quantization_group_size"),
        ({"dynamic_quantization_group_size": "-1"}, "dynamic_quantization_group_size"),
        ({"dynamic_quantization_group_size": "99999999999"}, "dynamic_quantization_group_size"),
        ({"dynamic_quantization_group_size": "٣٢"}, "dynamic_quantization_group_size"),
    ):
        with pytest.raises(InputError, match=f"target.runtime.{key}="):
            compile_config(runtime, threads=1)


def test_bf16_only_where_the_build_gated_it_and_the_cpu_runs_it():
    from artifacts.openvino_config import has_native_bf16, node_precision

    gated = {"inference_precision": "f32", "bf16_gated": "true"}
    assert node_precision(gated, native_bf16=True) == "bf16"
    assert compile_config(gated, threads=1, native_bf16=True)["INFERENCE_PRECISION_HINT"] == "bf16"
    assert node_precision(gated, native_bf16=False) == "f32"  # would silently run f32 anyway
    refused = {"inference_precision": "f32", "bf16_gated": "false"}
    assert node_precision(refused, native_bf16=True) == "f32"
    assert node_precision({"inference_precision": "f32"}, native_bf16=True) == "f32"  # older
    # a pinned precision other than f32 stays what it is
    assert (
        node_precision({"inference_precision": "f16", "bf16_gated": "true"}, native_bf16=True)
        == "f16"
    )
    assert has_native_bf16(["FP32", "BF16", "INT8"]) and not has_native_bf16(["FP32", "INT8"])


def test_a_malformed_bf16_flag_is_refused():
    import pytest

    from artifacts.errors import InputError

    for flag in ("True", "1", "yes", ""):
        with pytest.raises(InputError, match="target.runtime.bf16_gated="):
            compile_config({"bf16_gated": flag}, threads=1, native_bf16=True)


def test_the_host_probe_reads_the_cpu_plugins_capabilities():
    from artifacts.openvino_config import cpu_has_native_bf16

    class Core:
        def __init__(self, caps):
            self.caps = caps

        def get_property(self, device, name):
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return self.caps

    assert cpu_has_native_bf16(Core(["FP32", "BF16"])) is True
    assert cpu_has_native_bf16(Core(["FP32", "INT8"])) is False
    assert isinstance(cpu_has_native_bf16(), bool)  # this host's real plugin
