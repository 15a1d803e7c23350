"""Calibration and evaluation sets: from the shipped corpus or a user's JSONL files.

JSONL lines are ``{"text": ...}`` or ``{"query": ..., "product": ...}`` (optionally
``"label"``: relevance grade for rerank). A malformed file fails with its line number.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts.textproc import Item
from builder.data import corpus as shipped
from builder.errors import DatasetError


@dataclass
class EvalSet:
    """What the gate runs. Embedding: ``queries`` vs ``products``; rerank: ``groups``;
    classify: ``texts``."""

    queries: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    source: str = "shipped corpus"

    def items(self, task: str) -> list[Item]:
        if task == "embedding":
            return [*self.queries, *self.products]
        if task == "rerank":
            return [(q, d) for q, docs in self.groups for d in docs]
        return list(self.texts)

    def digest_payload(self, task: str) -> bytes:
        return json.dumps(self.items(task), ensure_ascii=False).encode()


@dataclass
class Record:
    text: str | None = None
    query: str | None = None
    product: str | None = None


def read_jsonl(path: Path) -> list[Record]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from exc
    records: list[Record] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rec = Record(text=obj.get("text"), query=obj.get("query"), product=obj.get("product"))
        for key in ("text", "query", "product"):
            value = getattr(rec, key)
            if value is not None and not isinstance(value, str):
                raise DatasetError(f"{path}:{lineno}: {key!r} must be a string")
        if rec.text is None and (rec.query is None or rec.product is None):
            raise DatasetError(f'{path}:{lineno}: needs "text", or both "query" and "product"')
        records.append(rec)
    if not records:
        raise DatasetError(f"{path} holds no records (empty calibration/eval set)")
    return records


def calibration_items(task: str, path: Path | None, *, limit: int = 300) -> list[Item]:
    """The length mix the quantizers calibrate on (pairs for rerank)."""
    if path is not None:
        items: list[Item] = []
        for rec in read_jsonl(path):
            if task == "rerank":
                items.append((rec.query or rec.text or "", rec.product or rec.text or ""))
            else:
                items.extend(t for t in (rec.text, rec.query, rec.product) if t)
        return _spread(items, limit)
    cal, _ = shipped.split(shipped.generate())
    if task == "rerank":
        pairs: list[Item] = []
        for g in cal.groups:
            for pid in g.product_ids[:3]:
                p = cal_or_full(pid)
                pairs.append((g.query, p.description or p.title))
        return _spread(pairs, limit)
    mix: list[Item] = [
        *_spread(cal.queries, limit * 2 // 5),
        *_spread(cal.titles, limit * 2 // 5),
        *_spread(cal.descriptions, limit - 2 * (limit * 2 // 5)),
    ]
    return mix


def cal_or_full(product_id: str) -> shipped.Product:
    return shipped.generate().product(product_id)


def _spread(items: list, limit: int) -> list:
    """An evenly spaced subset (deterministic) of at most ``limit`` items."""
    if len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def eval_set(task: str, path: Path | None, *, limit: int = 1200) -> EvalSet:
    if path is not None:
        return _eval_from_jsonl(task, read_jsonl(path), limit, str(path))
    _, ev = shipped.split(shipped.generate())
    if task == "embedding":
        queries = _spread(ev.queries, limit // 4)
        products = _spread(ev.titles, limit // 2) + _spread(ev.descriptions, limit // 4)
        return EvalSet(queries=queries, products=products)
    if task == "rerank":
        groups = []
        for g in _spread(ev.groups, limit // 10):
            docs = []
            for i, pid in enumerate(g.product_ids):
                p = shipped.generate().product(pid)
                docs.append(p.description if (p.description and i % 3 == 0) else p.title)
            groups.append((g.query, docs))
        return EvalSet(groups=groups)
    return EvalSet(texts=_spread(ev.queries, limit // 2) + _spread(ev.titles, limit // 2))


def _eval_from_jsonl(task: str, records: list[Record], limit: int, source: str) -> EvalSet:
    if task == "embedding":
        queries = [r.query for r in records if r.query]
        products = [t for r in records for t in (r.product, r.text) if t]
        if not queries:  # texts only: each text queries the others
            queries = products[: max(1, len(products) // 4)]
        return EvalSet(queries=queries[: limit // 4], products=products[:limit], source=source)
    if task == "rerank":
        grouped: OrderedDict[str, list[str]] = OrderedDict()
        for r in records:
            if r.query and r.product:
                grouped.setdefault(r.query, []).append(r.product)
        groups = [(q, d) for q, d in grouped.items() if len(d) >= 2][: max(1, limit // 10)]
        if not groups:
            raise DatasetError(f"{source}: rerank eval needs queries with >= 2 products each")
        return EvalSet(groups=groups, source=source)
    texts = [t for r in records for t in (r.text, r.query) if t][:limit]
    return EvalSet(texts=texts, source=source)
