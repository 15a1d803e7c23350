"""MiniLM served through every CPU backend of the edge matches the FP32 torch model (slow)."""

import numpy as np
import pytest

from artifacts.bundle import verify_bundle
from artifacts.signing import TrustedKeys
from artifacts.textproc import TextEncoder, run_items
from builder.data.datasets import eval_set
from builder.reference import TorchReference
from builder.source import inspect_model_dir
from edge_runtime.backends import BackendSettings
from edge_runtime.loaded_model import check, open_model
from tests.factories import minilm_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts():
    ev = eval_set("embedding", None)
    return (
        ev.queries[:100] + ev.products[:150] + ev.products[-50:]
    )  # queries, titles, long descriptions


@pytest.fixture(scope="module")
def torch_truth(minilm_build, texts):
    dest, _ = minilm_build
    source = inspect_model_dir(minilm_dir())
    ref = TorchReference(source, "embedding", threads=2)
    m = verify_bundle(dest / "onnx-fp32", None).manifest
    enc = TextEncoder.for_bundle(dest / "onnx-fp32", m)
    return run_items(enc, texts, ref, ["input_ids", "attention_mask", "token_type_ids"])


@pytest.mark.parametrize("target", ["onnx-fp32", "onnx-int8", "openvino-int8"])
def test_edge_backend_matches_torch_within_the_gate(
    minilm_build, publisher_keys, texts, torch_truth, target
):
    dest, _ = minilm_build
    bundle = verify_bundle(dest / target, TrustedKeys.from_paths([publisher_keys[1]]))
    model = open_model(bundle, BackendSettings(threads=2))
    assert check(model).passed
    got = run_items(model.encoder, texts, model.backend.infer, model.backend.input_names)
    cos = (
        (got * torch_truth).sum(1)
        / np.linalg.norm(got, axis=1)
        / np.linalg.norm(torch_truth, axis=1)
    )
    assert cos.mean() >= 0.995 and cos.min() >= 0.98, (target, cos.mean(), cos.min())
    if target == "onnx-fp32":
        assert cos.min() > 0.99999
    model.close()
