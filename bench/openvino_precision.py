"""The openvino-int8 bundle compiled with f32 (what the manifest pins) vs bf16 inference
precision, on a CPU with native BF16: product-mix throughput at batch 32, batch-1 latency, and
the cosine of each to the FP32 bundle's embeddings on the same texts.

    PYTHONPATH=. python -m bench.openvino_precision [rounds]   (after ``make bench`` built the bundles)

Not part of ``make bench``: a lever measured for issue 23, not a shipped setting (the manifest
pins f32 so the gate and every node run the same numerics).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from bench.ceiling import _batches
from bench.common import WORK_DIR, machine

BUNDLES = WORK_DIR / "minilm-bundles"


def main() -> None:
    import onnxruntime as ort
    import openvino as ov

    from artifacts.bundle import read_manifest
    from artifacts.openvino_config import PRECISION_KEY, compile_config

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    m = read_manifest(BUNDLES / "openvino-int8")
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        raise SystemExit(f"this CPU has no native BF16 for OpenVINO ({caps})")
    compiled = {
        p: core.compile_model(
            str(BUNDLES / "openvino-int8" / m.model_file()),
            "CPU",
            compile_config(dict(m.target.runtime) | {PRECISION_KEY: p}, threads=0),
        )
        for p in ("f32", "bf16")
    }
    batches, items, pad = _batches(BUNDLES / "onnx-int8", "products", 6)
    ref = ort.InferenceSession(
        str(BUNDLES / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def run(c, feeds: dict) -> np.ndarray:
        names = {i.any_name for i in c.inputs}
        return c.infer_new_request({k: v for k, v in feeds.items() if k in names})[
            c.output(m.io.output)
        ]

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        return (a * (b / np.linalg.norm(b, axis=-1, keepdims=True))).sum(-1)

    print(f"{machine()}; product mix, batch 32, {pad:.0%} padding; {rounds} interleaved rounds")
    for p, c in compiled.items():
        sims = np.concatenate([cos(run(c, b), ref.run([m.io.output], b)[0]) for b in batches])
        print(f"{p}: cosine to FP32 min {sims.min():.4f} mean {sims.mean():.4f}")
    names = [i.any_name for i in compiled["f32"].inputs]
    query = {n: np.ones((1, 12), np.int64) for n in names}
    res: dict[str, dict[str, list[float]]] = {p: {"items_s": [], "b1_ms": []} for p in compiled}
    for r in range(rounds):
        for p in ["f32", "bf16"][r % 2 :] + ["f32", "bf16"][: r % 2]:
            c = compiled[p]
            t0 = time.perf_counter()
            for b in batches:
                run(c, b)
            res[p]["items_s"].append(items / (time.perf_counter() - t0))
            lat = []
            for _ in range(100):
                t0 = time.perf_counter()
                run(c, query)
                lat.append(time.perf_counter() - t0)
            res[p]["b1_ms"].append(float(np.median(lat)) * 1e3)
    for p, v in res.items():
        print(
            f"{p}: {statistics.median(v['items_s']):.0f} items/s "
            f"[{min(v['items_s']):.0f}–{max(v['items_s']):.0f}], "
            f"batch-1 p50 {statistics.median(v['b1_ms']):.2f} ms"
        )
    ratio = [b / a for a, b in zip(res["f32"]["items_s"], res["bf16"]["items_s"], strict=True)]
    print(
        f"bf16 / f32 items/s per round: {statistics.median(ratio):.2f}x "
        f"[{min(ratio):.2f}–{max(ratio):.2f}]"
    )


if __name__ == "__main__":
    main()
