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
