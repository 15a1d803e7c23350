"""Does onnxruntime's transformer optimizer (Attention / MultiHeadAttention, SkipLayerNorm,
EmbedLayerNorm fusions) speed MiniLM up on the product mix, in FP32 and with dynamic INT8
(QAttention), against the shipped onnx-int8 bundle, and at what fidelity (cosine vs FP32)?

``PYTHONPATH=. python -m bench.attention_fusion`` (after ``make bench`` built the bundles; ~2 min).
Not part of ``make bench``: it measured a lever that was not kept (README, Benchmarks)."""

import collections
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from artifacts.bundle import verify_bundle
from artifacts.textproc import collate
from bench.common import WORK_DIR
from bench.workloads import texts
from edge_runtime.backends import BackendSettings
from edge_runtime.loaded_model import open_model

B = WORK_DIR / "minilm-bundles"
W = WORK_DIR / "fuse"


def variants():
    W.mkdir(parents=True, exist_ok=True)
    fp32 = B / "onnx-fp32" / "model.onnx"
    out = {"fp32": fp32, "int8-bundle": B / "onnx-int8" / "model.onnx"}
    for mha in (False, True):
        opts = FusionOptions("bert")
        opts.use_multi_head_attention = mha
        m = optimize_model(
            str(fp32), "bert", num_heads=12, hidden_size=384, optimization_options=opts, opt_level=0
        )
        name = "fp32-fused" + ("-mha" if mha else "")
        path = W / f"{name}.onnx"
        m.save_model_to_file(str(path))
        print(
            name,
            collections.Counter(n.op_type for n in m.model.graph.node).most_common(12),
            flush=True,
        )
        out[name] = path
    for name in ("fp32", "fp32-fused", "fp32-fused-mha"):
        q = W / f"{name}-dyn.onnx"
        quantize_dynamic(
            str(out[name]),
            str(q),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        out[name + "-dyn"] = q
    return out


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def batches():
    m = open_model(verify_bundle(B / "onnx-fp32", None), BackendSettings(threads=1))
    _, products = texts()
    enc = sorted(m.encoder.encode(products[:768]), key=len)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out = [collate(enc[i : i + 32], names) for i in range(0, len(enc), 32)]
    return out


def main():
    paths = variants()
    bs = batches()
    n = sum(len(b["input_ids"]) for b in bs)
    sess = {k: session(p) for k, p in paths.items()}
    ref = np.concatenate([sess["fp32"].run(None, b)[0] for b in bs])
    for k, s in sess.items():
        got = np.concatenate([s.run(None, b)[0] for b in bs])
        if got.ndim == 3:  # last_hidden_state: not comparable, skip
            print(k, "output", got.shape)
            continue
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        print(f"{k}: cosine vs fp32 min {cos.min():.5f} mean {cos.mean():.5f}", flush=True)
    speed = {k: [] for k in sess}
    for r in range(3):
        for k in list(sess) if r % 2 == 0 else list(sess)[::-1]:
            t0 = time.perf_counter()
            for b in bs:
                sess[k].run(None, b)
            speed[k].append(n / (time.perf_counter() - t0))
    base_int8 = statistics.median(speed["int8-bundle"])
    for k, v in speed.items():
        print(
            f"{k}: {statistics.median(v):.0f} items/s [{min(v):.0f}-{max(v):.0f}]  x{statistics.median(v) / base_int8:.2f} vs the int8 bundle"
        )


if __name__ == "__main__":
    main()
