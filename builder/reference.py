"""The FP32 truth: the torch model's outputs, the same head the ONNX graph bakes in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from artifacts.textproc import Encoded, Item, TextEncoder, collate
from builder.source import ModelSource


def run_sorted(
    encoder: TextEncoder,
    items: Sequence[Item],
    infer: Callable[[dict[str, np.ndarray]], np.ndarray],
    input_names: list[str],
    *,
    batch_size: int = 32,
    pad_id: int = 0,
) -> np.ndarray:
    """Tokenise ``items``, run ``infer`` on length-sorted batches, return outputs in input order."""
    encoded: list[Encoded] = encoder.encode(list(items))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[np.ndarray | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        feeds = collate([encoded[i] for i in idx], input_names, pad_id=pad_id)
        result = infer(feeds)
        for j, i in enumerate(idx):
            outputs[i] = result[j]
    return np.stack(outputs).astype(np.float32)  # type: ignore[arg-type]


class TorchReference:
    """Loads the model with transformers; ``__call__`` maps ONNX-style feeds to the FP32 output."""

    def __init__(self, source: ModelSource, task: str, *, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.task = task
        self.pooling = source.pooling
        cls = AutoModel if task == "embedding" else AutoModelForSequenceClassification
        self.model = cls.from_pretrained(str(source.path), dtype=torch.float32)
        self.model.eval()
        self.vocab_size = int(self.model.config.vocab_size)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            out = self.model(**tensors)
            if self.task != "embedding":
                return out.logits.float().numpy()
            hidden = out.last_hidden_state
            mask = tensors["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = (hidden + (1 - mask) * -1e9).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            return pooled.numpy()
