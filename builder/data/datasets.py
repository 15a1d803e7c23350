"""Calibration and evaluation sets: generated, or from a user's JSONL files.

Calibration comes from :mod:`builder.data.corpus`; evaluation from :mod:`builder.data.heldout`
(other seeds, templates and vocabulary), as two structurally different splits that a
configuration must both pass. A user's ``--eval`` file is the deciding split when given.

JSONL lines are ``{"text": ...}`` or ``{"query": ..., "product": ...}`` (a query and a product
relevant to it); an optional ``"slice"`` names the line's slice for per-slice metrics. A
malformed file fails with its line number.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts.textproc import Item
from builder.data import corpus as shipped
from builder.data import heldout
from builder.errors import DatasetError

DECIDING, ADVISORY = "deciding", "advisory"
MAX_SLICES, MAX_SLICE_NAME = 32, 64  # a user's slices end up in the manifest
SLICE_NAME = re.compile(r"[A-Za-z0-9 _.:/+-]{1,64}")  # no markup, no control characters
MAX_FILE_BYTES = 64 << 20  # a calibration/eval JSONL file
MAX_TEXT_CHARS = 16_384  # one text (models truncate at a few hundred tokens anyway)
MAX_DOCS_PER_GROUP = 50  # rerank: documents per query
# A user's eval file decides alone, so it must be big enough to decide anything: with fewer
# units the bootstrap interval says little and a single lucky item passes.
MIN_EVAL = {"queries": 20, "products": 20, "groups": 10, "texts": 20}


@dataclass
class EvalSet:
    """One eval split the gate runs. Embedding: ``queries`` vs ``products`` (``relevant[i]``:
    product indices written for query i, possibly empty); rerank: ``groups``; classify:
    ``texts``. Each unit carries a slice name (same order)."""

    queries: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    source: str = "generated held-out set"
    name: str = "eval"
    role: str = DECIDING
    relevant: list[list[int]] = field(default_factory=list)
    query_slices: list[str] = field(default_factory=list)
    product_slices: list[str] = field(default_factory=list)
    group_slices: list[str] = field(default_factory=list)
    text_slices: list[str] = field(default_factory=list)

    def items(self, task: str) -> list[Item]:
        if task == "embedding":
            return [*self.queries, *self.products]
        if task == "rerank":
            return [(q, d) for q, docs in self.groups for d in docs]
        return list(self.texts)

    def item_slices(self, task: str) -> list[str]:
        """The slice of every item, in ``items`` order (queries' slices prefixed ``query:``)."""
        if task == "embedding":
            return [
                *(f"query:{s}" for s in _pad(self.query_slices, len(self.queries))),
                *(f"product:{s}" for s in _pad(self.product_slices, len(self.products))),
            ]
        if task == "rerank":
            slices = _pad(self.group_slices, len(self.groups))
            return [s for s, (_, docs) in zip(slices, self.groups, strict=True) for _ in docs]
        return _pad(self.text_slices, len(self.texts))

    def composition(self, task: str) -> dict[str, int]:
        units = self.item_slices(task)
        if task == "rerank":
            units = _pad(self.group_slices, len(self.groups))
        out: dict[str, int] = {}
        for s in units:
            out[s] = out.get(s, 0) + 1
        return dict(sorted(out.items()))

    def digest_payload(self, task: str) -> bytes:
        return json.dumps(self.items(task), ensure_ascii=False).encode()


def _pad(slices: list[str], n: int) -> list[str]:
    return slices if len(slices) == n else ["all"] * n


def digest_payload(splits: list[EvalSet], task: str) -> bytes:
    """What the manifest's eval-set digest covers: every split, named, in order."""
    return json.dumps(
        [[s.name, s.role, s.items(task)] for s in splits], ensure_ascii=False
    ).encode()


@dataclass
class Record:
    text: str | None = None
    query: str | None = None
    product: str | None = None
    slice: str | None = None


def read_jsonl(path: Path) -> list[Record]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DatasetError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from exc
    records: list[Record] = []
    slices: set[str] = set()
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = msgspec.json.decode(line)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        rec = _record(obj, f"{path}:{lineno}")
        if rec.slice is not None:
            _check_slice(rec.slice, slices, f"{path}:{lineno}")
        records.append(rec)
    if not records:
        raise DatasetError(f"{path} holds no records (empty calibration/eval set)")
    return records


def _record(obj: object, where: str) -> Record:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    rec = Record(
        text=obj.get("text"),
        query=obj.get("query"),
        product=obj.get("product"),
        slice=obj.get("slice"),
    )
    for key in ("text", "query", "product", "slice"):
        value = getattr(rec, key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DatasetError(f"{where}: {key!r} must be a string")
        if not value.strip():
            raise DatasetError(f"{where}: {key!r} is empty")
        if len(value) > MAX_TEXT_CHARS:
            raise DatasetError(f"{where}: {key!r} is longer than {MAX_TEXT_CHARS} characters")
    if rec.text is None and (rec.query is None or rec.product is None):
        raise DatasetError(f'{where}: needs "text", or both "query" and "product"')
    return rec


def _check_slice(name: str, seen: set[str], where: str) -> None:
    if not SLICE_NAME.fullmatch(name):
        raise DatasetError(
            f"{where}: 'slice' must be 1-{MAX_SLICE_NAME} letters, digits, spaces or _.:/+-"
        )
    seen.add(name)
    if len(seen) > MAX_SLICES:
        raise DatasetError(
            f"{where}: more than {MAX_SLICES} distinct slices (the manifest records every "
            "slice's metrics)"
        )


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
    """The deciding split: the user's file, or the generated ``search`` split."""
    return eval_splits(task, path, limit=limit)[0]


def eval_splits(task: str, path: Path | None, *, limit: int = 1200) -> list[EvalSet]:
    """Every split the gate runs, deciding first. Generated: ``search`` and
    ``near-duplicates`` (both deciding); with a user's file, that file decides and the
    generated splits are reported as advisory."""
    # A catalog larger than the query set: retrieval order among many similar titles is what
    # INT8 noise disturbs first (an 840-title catalog hid a 0.01 overlap loss).
    search = heldout.search_split(
        n_queries=max(4, limit * 3 // 10), n_corpus=max(8, limit * 3 // 2)
    )
    near = heldout.near_duplicate_split(n_queries=max(4, limit // 5), n_corpus=max(8, limit // 2))
    generated = [_from_retrieval(task, search, limit), _from_retrieval(task, near, limit)]
    if path is None:
        return generated
    for split in generated:
        split.role = ADVISORY
    user = _eval_from_jsonl(task, read_jsonl(path), limit, f"user eval file {Path(path).name}")
    _check_big_enough(task, user, str(path))
    return [user, *generated]


def _check_big_enough(task: str, split: EvalSet, where: str) -> None:
    have = {
        "embedding": {"queries": len(split.queries), "products": len(split.products)},
        "rerank": {"groups": len(split.groups)},
        "classify": {"texts": len(split.texts)},
    }[task]
    short = [
        f"{n} {unit} (at least {MIN_EVAL[unit]})" for unit, n in have.items() if n < MIN_EVAL[unit]
    ]
    if short:
        raise DatasetError(f"{where}: too small to decide a gate: {', '.join(short)}")


def _from_retrieval(task: str, split: heldout.Retrieval, limit: int) -> EvalSet:
    source = f"generated held-out set (seed {heldout.SEED}, templates not used for calibration)"
    q_text = [t.text for t in split.queries]
    c_text = [t.text for t in split.corpus]
    if task == "embedding":
        return EvalSet(
            queries=q_text,
            products=c_text,
            relevant=[list(r) for r in split.relevant],
            query_slices=[t.slice for t in split.queries],
            product_slices=[t.slice for t in split.corpus],
            source=source,
            name=split.name,
        )
    if task == "rerank":  # each query over its relevant products and others: ~10 documents
        groups, slices = [], []
        n_groups = max(2, min(len(q_text), limit // 10))
        for i in range(n_groups):
            rel = split.relevant[i][:4]
            others = [(i * 7 + j * 13) % len(c_text) for j in range(1, 12)]
            docs = list(dict.fromkeys([*rel, *others]))[:10]
            groups.append((q_text[i], [c_text[d] for d in docs]))
            slices.append(split.queries[i].slice)
        return EvalSet(groups=groups, group_slices=slices, source=source, name=split.name)
    texts = [*split.queries, *split.corpus][: max(8, limit // 2)]
    return EvalSet(
        texts=[t.text for t in texts],
        text_slices=[t.slice for t in texts],
        source=source,
        name=split.name,
    )


def _eval_from_jsonl(task: str, records: list[Record], limit: int, source: str) -> EvalSet:
    name = "user"
    if task == "embedding":
        products: list[str] = []
        product_slices: list[str] = []
        index: dict[str, int] = {}
        queries: OrderedDict[str, list[int]] = OrderedDict()
        query_slice: dict[str, str] = {}
        for r in records:
            for t in (r.product, r.text):
                if t and t not in index and len(products) < limit:
                    index[t] = len(products)
                    products.append(t)
                    product_slices.append(r.slice or "product")
            if r.query:
                rel = queries.setdefault(r.query, [])
                query_slice.setdefault(r.query, r.slice or "query")
                if r.product and r.product in index and index[r.product] not in rel:
                    rel.append(index[r.product])
        if not queries:  # texts only: each text queries the others
            picked = products[: max(1, len(products) // 4)]
            return EvalSet(
                queries=picked,
                products=products,
                relevant=[[] for _ in picked],
                query_slices=["text-as-query"] * len(picked),
                product_slices=product_slices,
                source=source,
                name=name,
            )
        kept = list(queries.items())[: max(1, limit // 4)]
        return EvalSet(
            queries=[q for q, _ in kept],
            products=products,
            relevant=[rel for _, rel in kept],
            query_slices=[query_slice[q] for q, _ in kept],
            product_slices=product_slices,
            source=source,
            name=name,
        )
    if task == "rerank":
        grouped: OrderedDict[str, list[str]] = OrderedDict()
        slices: dict[str, str] = {}
        for r in records:
            if r.query and r.product:
                grouped.setdefault(r.query, []).append(r.product)
                slices.setdefault(r.query, r.slice or "all")
        groups = [
            (q, list(dict.fromkeys(d))[:MAX_DOCS_PER_GROUP])
            for q, d in grouped.items()
            if len(set(d)) >= 2
        ][: max(1, limit // 10)]
        if not groups:
            raise DatasetError(f"{source}: rerank eval needs queries with >= 2 products each")
        return EvalSet(
            groups=groups, group_slices=[slices[q] for q, _ in groups], source=source, name=name
        )
    texts = [(t, r.slice or "all") for r in records for t in (r.text, r.query) if t][:limit]
    return EvalSet(
        texts=[t for t, _ in texts], text_slices=[s for _, s in texts], source=source, name=name
    )
