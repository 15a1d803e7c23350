"""Tokenisation and post-processing shared by the builder (golden/gate) and the edge.

Part of the contract: a bundle's outputs are defined for inputs prepared exactly this way
(``tokenizer.json`` + the manifest's :class:`TokenizerSpec`), so the builder's reference, the
golden smoke check and live serving all go through this one code path. Imports ``tokenizers``
and ``numpy`` (light) — never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from artifacts.ascii_wordpiece import AsciiWordPiece
from artifacts.manifest import Manifest, TokenizerSpec

Item = str | tuple[str, str]

_STRATEGY = {
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenised input, unpadded."""

    ids: np.ndarray  # int64 [n]
    type_ids: np.ndarray  # int64 [n]
    truncated: bool

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TextEncoder:
    """Tokenise single texts or (query, document) pairs the way the manifest says."""

    def __init__(self, tokenizer_file: Path, spec: TokenizerSpec) -> None:
        self.spec = spec
        # A tokenizer.json may carry its own padding/truncation (MiniLM's pads to a fixed 128):
        # the manifest is authoritative, so reset both.
        self._plain = Tokenizer.from_file(str(tokenizer_file))
        self._plain.no_padding()
        self._plain.enable_truncation(
            max_length=spec.max_length, strategy=_STRATEGY[spec.truncation]
        )
        # pairs: each side tokenised alone (no specials, no truncation), then joined by the
        # tokenizer's own post_process — exactly what encode() does, with a repeated side
        # (the rerank query) tokenised once instead of once per pair
        self._sides = Tokenizer.from_file(str(tokenizer_file))
        self._sides.no_padding()
        self._sides.no_truncation()
        # a lone short ASCII text: the same ids in a few Python steps (see ascii_wordpiece)
        self._ascii = AsciiWordPiece.of(self._plain, self._sides, spec.max_length)

    @classmethod
    def for_bundle(cls, bundle_dir: Path, manifest: Manifest) -> TextEncoder:
        return cls(Path(bundle_dir) / manifest.tokenizer.file, manifest.tokenizer)

    def encode(self, items: Sequence[Item]) -> list[Encoded]:
        """Tokenise a batch; ``truncated`` tells whether an item lost tokens to max_length."""
        if not items:
            return []
        encs: list[tuple[Any, bool]]
        if isinstance(items[0], tuple):
            encs = self._encode_pairs(items)  # type: ignore[arg-type]
        elif len(items) == 1:  # a lone query: no hand-off to the tokenizer's thread pool
            fast = self._ascii.encode(items[0]) if self._ascii is not None else None
            if fast is not None:
                ids = np.array(fast, dtype=np.int64)
                return [Encoded(ids=ids, type_ids=constant(0, len(fast)), truncated=False)]
            encs = [(self._plain.encode(items[0]), False)]
        else:
            encs = [(e, False) for e in self._plain.encode_batch(list(items))]
        out: list[Encoded] = []
        for enc, cut in encs:
            ids = np.asarray(enc.ids, dtype=np.int64)
            out.append(
                Encoded(
                    ids=ids,
                    type_ids=np.asarray(enc.type_ids, dtype=np.int64),
                    truncated=cut or bool(enc.overflowing),
                )
            )
        return out

    def _encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[Any, bool]]:
        """(pair encoding, whether a side was cut short before joining) per pair."""
        budget = self.spec.max_length - self._plain.num_special_tokens_to_add(True)
        strategy = self.spec.truncation
        firsts = list(dict.fromkeys(a for a, _ in pairs))
        first = dict(
            zip(firsts, self._sides.encode_batch(firsts, add_special_tokens=False), strict=True)
        )
        seconds = self._sides.encode_batch([b for _, b in pairs], add_special_tokens=False)
        cuts: dict[tuple[str, int], Any] = {}  # the query cut once per length, not per pair
        out = []
        for (a, b), enc_b in zip(pairs, seconds, strict=True):
            enc_a = first[a]
            n_a, n_b = len(enc_a.ids), len(enc_b.ids)
            # cap each side just above the budget, keeping which side is longer (longest_first
            # splits by that): the joined pair is exactly what the uncut sides give
            cap_a = budget + (n_a > n_b) if strategy != "only_second" else n_a
            cap_b = budget + (n_b > n_a) if strategy != "only_first" else n_b
            side_a, cut_a = self._prefix(a, enc_a, cap_a, cuts)
            side_b, cut_b = self._prefix(b, enc_b, cap_b, {})
            joined = self._plain.post_process(side_a, side_b, add_special_tokens=True)
            out.append((joined, cut_a or cut_b))
        return out

    def _prefix(self, text: str, enc: Any, cap: int, cuts: dict) -> tuple[Any, bool]:
        """``enc`` cut to its first ``cap`` tokens by re-tokenising just that prefix of the text,
        so joining never copies (and post-processes) an overflow the size of the text for
        every pair. Used only when it gives exactly those ids; else the full encoding."""
        if cap <= 0 or len(enc.ids) <= cap:
            return enc, False
        key = (text, cap)
        if key not in cuts:
            cut = self._sides.encode(text[: enc.offsets[cap - 1][1]], add_special_tokens=False)
            ok = cut.ids == enc.ids[:cap] and cut.type_ids == enc.type_ids[:cap]
            cuts[key] = cut if ok else None
        return (cuts[key], True) if cuts[key] is not None else (enc, False)


_I64 = np.dtype(np.int64)
_CONSTANTS: dict[tuple[int, int], np.ndarray] = {}


def constant(value: int, n: int) -> np.ndarray:
    """A read-only int64 row of ``n`` ``value``s, made once per length: a lone query's type ids
    and attention mask, without a numpy call each (5-15 µs apiece on the caches a model run
    just cooled). Bounded: lengths of one model's inputs."""
    row = _CONSTANTS.get((value, n))
    if row is None:
        row = np.full(n, value, dtype=np.int64)
        row.setflags(write=False)
        if len(_CONSTANTS) < 4096:
            _CONSTANTS[(value, n)] = row
    return row


def collate(
    batch: list[Encoded],
    input_names: list[str],
    *,
    pad_id: int = 0,
    multiple_of: int = 0,
    cap: int = 0,
) -> dict[str, np.ndarray]:
    """Pad a batch to its longest item (right padding) and build the model's input dict.

    ``multiple_of`` rounds the padded length up (fewer distinct shapes for engines that
    prepare kernels per shape), never past ``cap`` (the model's maximum length).
    """
    longest = max(len(e) for e in batch)
    if multiple_of > 1:
        rounded = -(-longest // multiple_of) * multiple_of
        longest = max(longest, min(rounded, cap)) if cap else rounded
    n = len(batch)
    e = batch[0]
    if n == 1 and len(e) == longest and e.ids.dtype is _I64 and e.type_ids.dtype is _I64:
        # a lone query (c=1): views of its own arrays and a shared mask, nothing to write
        arrays = {
            "input_ids": e.ids.reshape(1, longest),
            "attention_mask": constant(1, longest).reshape(1, longest),
            "token_type_ids": e.type_ids.reshape(1, longest),
        }
        return {name: arrays[name] for name in input_names}
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    types = np.zeros((n, longest), dtype=np.int64)
    for i, e in enumerate(batch):
        k = len(e)
        ids[i, :k] = e.ids
        mask[i, :k] = 1
        types[i, :k] = e.type_ids
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in input_names}


def run_items(
    encoder: TextEncoder,
    items: Sequence[Item],
    infer,
    input_names: list[str],
    *,
    batch_size: int = 32,
    pad_id: int = 0,
) -> np.ndarray:
    """Tokenise ``items``, run ``infer`` on length-sorted batches, return outputs in input order."""
    encoded = encoder.encode(list(items))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        result = infer(collate([encoded[i] for i in idx], input_names, pad_id=pad_id))
        for j, i in enumerate(idx):
            outputs[i] = result[j]
    return np.stack(outputs).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def cosines(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (float64), each row flattened; zero rows count as 0."""
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    a = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    num = (r * a).sum(axis=1)
    den = np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(a, axis=1), 1e-12)
    return num / den


def compare(reference: np.ndarray, actual: np.ndarray, metric: str) -> tuple[float, np.ndarray]:
    """Per-item agreement: cosine (higher is better) or max-abs deviation (lower is better).

    Returns (worst value, per-item values).
    """
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs actual {actual.shape}")
    if metric == "cosine":
        per = cosines(reference, actual)
        return float(per.min()), per
    per = np.abs(reference - actual).reshape(len(reference), -1).max(axis=1)
    return float(per.max()), per
