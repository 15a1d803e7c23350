"""golden.npz: inputs and FP32 reference outputs for the load-time smoke check.

The check runs the whole path — tokenise, infer, post-process — so a wrong tokenizer, a
corrupt-but-signed model or a backend numerics bug all fail it. numpy only; no pickle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artifacts.errors import BundleError
from artifacts.textproc import Item, TextEncoder, compare, run_items


@dataclass(frozen=True)
class Golden:
    items: list[Item]
    reference: np.ndarray


def golden_bytes(items: list[Item], reference: np.ndarray) -> bytes:
    buf = io.BytesIO()
    pairs = [it for it in items if isinstance(it, tuple)]
    if pairs:
        np.savez_compressed(
            buf,
            queries=np.array([q for q, _ in pairs], dtype=np.str_),
            documents=np.array([d for _, d in pairs], dtype=np.str_),
            reference=reference.astype(np.float32),
        )
    else:
        np.savez_compressed(
            buf, texts=np.array(items, dtype=np.str_), reference=reference.astype(np.float32)
        )
    return buf.getvalue()


def read_golden(path: Path) -> Golden:
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            reference = np.asarray(data["reference"], dtype=np.float32)
            if "texts" in data:
                items: list[Item] = [str(t) for t in data["texts"]]
            else:
                items = [
                    (str(q), str(d))
                    for q, d in zip(data["queries"], data["documents"], strict=True)
                ]
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"golden file {path} is unreadable: {exc}") from exc
    if len(items) != len(reference):
        raise BundleError(f"golden file {path}: {len(items)} inputs but {len(reference)} outputs")
    return Golden(items=items, reference=reference)


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    metric: str
    worst: float
    tolerance: float

    def describe(self) -> str:
        op = ">=" if self.metric == "cosine" else "<="
        verdict = "passed" if self.passed else "FAILED"
        return f"golden {verdict}: worst {self.metric} {self.worst:.4f} (needs {op} {self.tolerance:.4f})"


def smoke_check(bundle_dir: Path, manifest, infer, input_names: list[str]) -> SmokeResult:
    """The whole serving path on the golden inputs (tokenise, infer, compare) vs FP32."""
    golden = read_golden(Path(bundle_dir) / manifest.golden.file)
    encoder = TextEncoder.for_bundle(bundle_dir, manifest)
    out = run_items(
        encoder, golden.items, infer, input_names, pad_id=manifest.tokenizer.pad_token_id
    )
    metric, tol = manifest.golden.metric, manifest.golden.tolerance
    worst, _ = compare(golden.reference, out, metric)
    passed = worst >= tol if metric == "cosine" else worst <= tol
    return SmokeResult(passed=bool(passed), metric=metric, worst=float(worst), tolerance=float(tol))
