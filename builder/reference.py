"""The FP32 truth: the torch model's outputs, the same head the ONNX graph bakes in."""

from __future__ import annotations

import importlib.metadata
import io
import os
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from artifacts.atomic import write_bytes
from artifacts.digests import hex_of, sha256_json
from builder.source import ModelSource


def pool(hidden, attention_mask, pooling: str):
    """The sentence embedding the ONNX graph bakes in: mean / cls / max pooling over the real
    tokens, L2-normalised (torch tensors in and out)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = (hidden + (1 - mask) * -1e9).max(dim=1).values
    else:
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


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
            return pool(out.last_hidden_state, tensors["attention_mask"], self.pooling).numpy()


class ReferenceCache:
    """FP32 reference outputs on disk, keyed by everything they depend on (source weights,
    task, eval data, tokenizer, library versions).

    A build recomputes the reference for every target job and again to verify each one; on one
    worker those are the same numbers. Entries are this worker's own computations (its own
    directory), written atomically; an entry that does not load or does not match the eval
    splits' sizes is recomputed. ``root=None`` disables caching.
    """

    def __init__(self, root: Path | None, *, read: bool = True) -> None:
        self.root = root
        self.read = read  # False: compute fresh, still record (independent verification)

    def outputs(
        self, key: dict[str, object], sizes: list[int], compute: Callable[[], list[np.ndarray]]
    ) -> list[np.ndarray]:
        path = self._path(key)
        if path is not None and self.read and path.is_file():
            try:
                with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
                    arrays = [data[f"arr_{i}"] for i in range(len(sizes))]
                if [len(a) for a in arrays] == sizes and all(np.isfinite(a).all() for a in arrays):
                    os.utime(path)  # recently used: kept by the worker's cache pruning
                    return arrays
            except Exception:  # a damaged entry (truncated zip, bad header): recompute it
                path.unlink(missing_ok=True)
        arrays = compute()
        if path is not None:
            buf = io.BytesIO()
            np.savez(buf, *arrays)
            write_bytes(path, buf.getvalue())
        return arrays

    def _path(self, key: dict[str, object]) -> Path | None:
        if self.root is None:
            return None
        versions = {}
        for lib in ("torch", "transformers", "tokenizers", "numpy", "shipyard"):
            try:
                versions[lib] = importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                versions[lib] = ""
        return self.root / f"{hex_of(sha256_json({**key, **versions}))}.npz"


REFERENCE_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
REFERENCE_SCHEMA = 1  # bump when how reference outputs are computed changes


def reference_outputs(
    cache: ReferenceCache,
    source: ModelSource,
    encoder,
    tokenizer_file: Path,
    splits: list,
    reference: TorchReference,
) -> list[np.ndarray]:
    """The FP32 outputs of every eval split (``builder.data.datasets.EvalSet``), from the
    cache when this worker already computed them for the same inputs."""
    from artifacts.digests import sha256_bytes, sha256_file
    from artifacts.textproc import run_items
    from builder.data.datasets import digest_payload

    task = reference.task
    key = {
        "source": source.digest,
        "task": task,
        "pooling": source.pooling,
        "eval": sha256_bytes(digest_payload(splits, task)),
        "tokenizer": sha256_file(tokenizer_file),
        "tokenizer_spec": msgspec.to_builtins(encoder.spec),
        "schema": REFERENCE_SCHEMA,
    }
    pad = encoder.spec.pad_token_id
    return cache.outputs(
        key,
        [len(s.items(task)) for s in splits],
        lambda: [
            run_items(encoder, s.items(task), reference, REFERENCE_INPUTS, pad_id=pad)
            for s in splits
        ],
    )
