"""The FP32 truth: the torch model's outputs, the same head the ONNX graph bakes in."""

from __future__ import annotations

import numpy as np

from builder.source import ModelSource


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
