"""Calibration statistics from the FP32 graph.

One ORT pass over the calibration text (the real length mix: queries, titles, descriptions)
collects, for every dense layer's input, the per-channel max |x| over real (unpadded) tokens:
SmoothQuant's activation side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from artifacts.textproc import Item, TextEncoder, collate
from builder.quantize.graph import expose_outputs, weight_matmuls


@dataclass
class ActivationStats:
    absmax: dict[str, np.ndarray] = field(default_factory=dict)  # input name -> [K]
    tokens: int = 0


def calibration_batches(
    encoder: TextEncoder, items: Sequence[Item], input_names: list[str], *, batch_size: int = 16
) -> list[dict[str, np.ndarray]]:
    """The calibration mix as model feeds, in file order, ``batch_size`` texts per batch (each
    batch padded to its own longest text, so the batches carry the real length mix). Every
    target calibrates on these: SmoothQuant statistics, ModelOpt Q/DQ and AutoCast."""
    encoded = encoder.encode(list(items))
    return [
        collate(encoded[start : start + batch_size], input_names)
        for start in range(0, len(encoded), batch_size)
    ]


def collect_stats(
    model_path: Path,
    encoder: TextEncoder,
    items: Sequence[Item],
    *,
    batch_size: int = 16,
    threads: int = 0,
) -> ActivationStats:
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    inputs = sorted({m.input for m in weight_matmuls(model)})
    probe = expose_outputs(model, inputs)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    stats = ActivationStats()
    for feeds in calibration_batches(encoder, items, names, batch_size=batch_size):
        mask = feeds["attention_mask"].astype(bool)
        outs = sess.run(inputs, feeds)
        stats.tokens += int(mask.sum())
        for name, value in zip(inputs, outs, strict=True):
            rows = value[mask] if value.ndim == 3 else value.reshape(-1, value.shape[-1])
            amax = np.abs(rows).max(axis=0)
            prev = stats.absmax.get(name)
            stats.absmax[name] = amax if prev is None else np.maximum(prev, amax)
    return stats
