"""A loaded catalog index: a memory-mapped usearch HNSW view over the base bundle, plus the
newest cumulative delta (upserts searched exactly, deletes masked out) applied without a reload.

Why memory-mapped: a node with several indexes keeps only the pages its queries touch resident;
the OS shares and evicts them. Why exact search on filtered sets: an HNSW walk that must skip
most of the graph returns too few hits, while usearch's exact kernel over the file's own vector
matrix (also memory-mapped) scores 8,000 f16 rows in about 1.5 ms (bench/search.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from artifacts.bundle import VerifiedBundle
from artifacts.catalog import DELTA_FILE, INDEX_FILE, ITEMS_FILE, Columns, decode_items
from artifacts.errors import BundleError, ConflictError
from artifacts.manifest import IndexModel, IndexSpec
from edge_runtime.search.filters import compile_filter

EXACT_ROWS = 32768  # filtered sets this small are searched exactly (vectors mapped as a matrix)
EXACT_ROWS_SLOW = 1024  # ... when each vector must be fetched from usearch one by one
EXACT_BLOCK = 16384  # rows scored per block of an exact scan (bounded memory)
SCAN_AFTER = 2048  # a mapped matrix: past this over-fetch, an exact scan is cheaper
MAX_ANN_FETCH = 8192  # past this over-fetch, usearch's exact scan is cheaper than the graph
MAX_EXPANSION = 4096  # a bundle cannot make every search walk more of the graph than this
_SCALAR = {"i8": "I8", "f16": "F16", "f32": "F32"}


def _check_header(meta: dict | None, file: str, spec: IndexSpec) -> None:
    """What the manifest says must be what the file holds (read before it is mapped)."""
    if meta is None:
        raise BundleError(f"{file}: not a usearch index")
    dtype = "f32" if file == DELTA_FILE else spec.dtype
    checks = {
        "dimensions": (int(meta.get("dimensions", -1)), spec.dim),
        "metric": (getattr(meta.get("kind_metric"), "name", ""), "Cos"),
        "vector type": (getattr(meta.get("kind_scalar"), "name", ""), _SCALAR[dtype]),
        "deleted entries": (int(meta.get("count_deleted", -1)), 0),
    }
    for what, (found, expected) in checks.items():
        if found != expected:
            raise BundleError(f"{file}: {what} is {found!r}, the manifest says {expected!r}")


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float
    fields: dict[str, str | float | bool | None]


def _usearch():
    try:
        from usearch.index import Index
    except ImportError as exc:  # pragma: no cover - an install without the edge extra
        raise BundleError("catalog search needs usearch: pip install 'shipyard[edge]'") from exc
    return Index


def index_spec(bundle: VerifiedBundle) -> IndexSpec:
    m = bundle.manifest
    if m.model.task != "index" or m.index is None or m.target.backend != "usearch":
        raise BundleError(
            f"{m.model.name} v{m.model.version} {m.target.id} is not a catalog index bundle"
        )
    return m.index


class Part:
    """One vector file and its items: row ``i`` is key ``i``."""

    def __init__(self, bundle: VerifiedBundle, file: str, *, view: bool) -> None:
        spec = index_spec(bundle)
        Index = _usearch()
        path = bundle.file(file)
        self.dim = spec.dim
        _check_header(Index.metadata(str(path)), file, spec)
        self.index = Index.restore(str(path), view=view)
        if self.index is None:
            raise BundleError(f"{file}: usearch cannot open it")
        self.index.expansion_search = max(16, min(spec.expansion_search or 64, MAX_EXPANSION))
        self.rows = int(self.index.size)
        keys = np.sort(np.asarray(self.index.keys, np.uint64))
        if not np.array_equal(keys, np.arange(self.rows, dtype=np.uint64)):
            raise BundleError(f"{file}: its keys are not the rows 0..{self.rows - 1}")
        self.items = decode_items(bundle.file(ITEMS_FILE).read_bytes(), expect_rows=self.rows)
        self.cols = Columns.of(self.items)
        self.dense: np.ndarray | None = None  # small parts (deltas): every vector, normalised
        self.matrix: np.ndarray | None = None  # the file's vectors, memory-mapped, row = key
        self._row_of: dict[str, int] | None = None
        if view:
            self.matrix = _vector_matrix(str(path), self.index, self.rows, spec)
        if not view:  # by key: usearch lists its vectors in internal order, not key order
            got = self.index.get(np.arange(self.rows, dtype=np.uint64), dtype=np.float32)
            stacked = np.stack(got) if self.rows else np.zeros((0, spec.dim))
            self.dense = _normalise(np.asarray(stacked, np.float32).reshape(self.rows, spec.dim))

    def row_of(self) -> dict[str, int]:
        """id -> row (built once, on the first delta)."""
        if self._row_of is None:
            self._row_of = {item: row for row, item in enumerate(self.items.ids)}
        return self._row_of

    def widened(self, types: Mapping[str, str]) -> Part:
        """This part with a null column for every field only the other part has (so a filter
        on it parses); shares the vectors and items."""
        missing = {n: t for n, t in types.items() if n not in self.cols.types}
        if not missing:
            return self
        part = copy.copy(self)
        arrays = dict(self.cols.arrays)
        for name, kind in missing.items():
            arrays[name] = (
                np.full(self.rows, np.nan)
                if kind == "number"
                else np.full(self.rows, -1, np.int8 if kind == "bool" else np.int32)
            )
        part.cols = Columns(
            types={**self.cols.types, **missing},  # type: ignore[dict-item]
            arrays=arrays,
            vocab=self.cols.vocab,
        )
        return part

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return self.dense[rows]
        if self.matrix is not None:
            return _normalise(np.asarray(self.matrix[rows], np.float32))
        got = self.index.get(rows.astype(np.uint64), dtype=np.float32)
        return _normalise(np.stack(got).reshape(len(rows), -1))

    def _block_top(self, rows: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
        """The (about) best ``k`` of ``rows``: on the mapped matrix by usearch's exact kernel
        in the stored precision (numpy's f16 -> f32 conversion alone costs 4x more)."""
        if self.matrix is not None and self.dense is None:
            from usearch.index import MetricKind
            from usearch.index import search as brute

            sub = np.take(self.matrix, rows, axis=0)
            if sub.dtype == np.int8:
                query = np.clip(np.round(q * 127), -127, 127).astype(np.int8)
            else:
                query = q.astype(sub.dtype)
            found = brute(sub, query, min(k, len(rows)), MetricKind.Cos, exact=True, threads=1)
            return rows[np.asarray(found.keys, np.int64).reshape(-1)]
        s = self.vectors(rows) @ q
        return rows if len(s) <= k else rows[np.argpartition(-s, k - 1)[:k]]

    def exact(self, q: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[float, int]]:
        """The best ``k`` of ``rows`` by exact cosine, scanned in blocks (bounded memory)."""
        kept = [
            self._block_top(rows[start : start + EXACT_BLOCK], q, k)
            for start in range(0, len(rows), EXACT_BLOCK)
        ]
        if not kept:
            return []
        found = np.concatenate(kept)
        scores = self.vectors(found) @ q  # the cosine itself, for the few kept
        order = np.lexsort((found, -scores))[:k]
        return [(float(scores[i]), int(found[i])) for i in order]

    @property
    def scannable(self) -> bool:
        """Exact scans over any admitted set are cheap (vectors as one matrix)."""
        return self.dense is not None or self.matrix is not None

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[float, int]]:
        """The ``k`` best admitted rows, best first, as (cosine, row). Bounded work: a small
        admitted set exactly; else HNSW, over-fetching up to MAX_ANN_FETCH; past that an exact
        scan inside usearch (C++, no per-row Python objects), widening until ``k`` are found."""
        n_allowed = self.rows if allowed is None else int(allowed.sum())
        if n_allowed == 0 or k < 1:
            return []
        small = EXACT_ROWS if self.scannable else EXACT_ROWS_SLOW
        if self.dense is not None or (allowed is not None and n_allowed <= small):
            rows = np.arange(self.rows) if allowed is None else np.flatnonzero(allowed)
            return self.exact(q, rows, k)
        want = min(k, n_allowed)
        count = min(self.rows, k if allowed is None else k + int(3 * k * self.rows / n_allowed))
        exact = False
        while True:
            found = self.index.search(q, count, exact=exact)
            keys = np.asarray(found.keys, np.int64)
            scores = 1.0 - np.asarray(found.distances, np.float64)
            keep = (keys >= 0) & (keys < self.rows)
            if allowed is not None:
                keep[keep] = allowed[keys[keep]]
            hits = [(float(s), int(r)) for s, r in zip(scores[keep], keys[keep], strict=True)]
            if len(hits) >= want or count >= self.rows:
                return hits[:k]
            count = min(self.rows, count * 4)
            if self.scannable and allowed is not None and count > SCAN_AFTER:
                return self.exact(q, np.flatnonzero(allowed), k)
            exact = exact or count > MAX_ANN_FETCH

    def hit(self, row: int, score: float) -> Hit:
        fields = {
            name: col.values[row]
            for name, col in self.items.fields.items()
            if col.values[row] is not None
        }
        return Hit(id=self.items.ids[row], text=self.items.texts[row], score=score, fields=fields)


_NUMPY = {"i8": np.int8, "f16": np.float16, "f32": np.float32}


def _vector_matrix(path: str, index, rows: int, spec: IndexSpec) -> np.ndarray | None:
    """The vectors a usearch file stores ahead of its graph, memory-mapped as (rows, dim) with
    row = key. True of a single-threaded build (the builder's); checked on a sample of keys
    against usearch's own answer, else None (exact scans then fetch vectors one by one)."""
    dtype = np.dtype(_NUMPY[spec.dtype])
    head = np.fromfile(path, np.uint32, count=2)
    if (
        rows == 0
        or len(head) < 2
        or (int(head[0]), int(head[1])) != (rows, spec.dim * dtype.itemsize)
    ):
        return None
    matrix = np.memmap(path, dtype, mode="r", offset=8, shape=(rows, spec.dim))
    sample = np.unique(np.linspace(0, rows - 1, min(rows, 64)).astype(np.uint64))
    theirs = _normalise(np.stack(index.get(sample, dtype=np.float32)).astype(np.float32))
    ours = _normalise(np.asarray(matrix[sample.astype(np.int64)], np.float32))
    return matrix if np.allclose(theirs, ours, atol=2e-2) else None


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


class CatalogIndex:
    """A base index and, optionally, the newest cumulative delta on top of it."""

    def __init__(
        self,
        base: VerifiedBundle,
        delta: VerifiedBundle | None = None,
        *,
        reuse: CatalogIndex | None = None,
    ) -> None:
        """``reuse``: an index already open on the same base (a new delta is applied to its
        memory map and items instead of opening them again)."""
        spec = index_spec(base)
        if spec.base_version:
            raise BundleError(
                f"{base.manifest.model.name} v{base.manifest.model.version} is a delta, "
                "not a full index"
            )
        self.base_bundle, self.delta_bundle = base, delta
        shared: Part | None = None
        if reuse is not None and reuse.base_bundle.digest == base.digest:
            shared = reuse.raw_base
        self.raw_base: Part = shared or Part(base, INDEX_FILE, view=True)
        self.base = self.raw_base
        self.delta: Part | None = None
        self.dead = np.zeros(self.base.rows, bool)
        if delta is not None:
            self._check_delta(base, delta)
            self.delta = Part(delta, DELTA_FILE, view=False)
            row_of = self.raw_base.row_of()
            for item in (*self.delta.items.ids, *self.delta.items.deletes):
                row = row_of.get(item)
                if row is not None:
                    self.dead[row] = True
            clash = sorted(
                n for n, t in self.delta.cols.types.items() if self.base.cols.types.get(n, t) != t
            )
            if clash:
                raise BundleError(f"fields {clash} have different types in the base and the delta")
            types = {**self.base.cols.types, **self.delta.cols.types}
            self.base = self.base.widened(types)
            self.delta = self.delta.widened(types)
        # computed once: an unfiltered search does no per-row work on the base
        self.live: np.ndarray | None = ~self.dead if self.dead.any() else None
        self.live_count = self.base.rows - int(self.dead.sum())

    @staticmethod
    def _check_delta(base: VerifiedBundle, delta: VerifiedBundle) -> None:
        b, d = index_spec(base), index_spec(delta)
        named = delta.manifest.model
        if named.name != base.manifest.model.name or d.base_version != base.manifest.model.version:
            raise BundleError(
                f"delta {named.name} v{named.version} applies to v{d.base_version}, "
                f"not {base.manifest.model.name} v{base.manifest.model.version}"
            )
        if d.base_digest != base.digest:
            raise BundleError(
                f"delta {named.name} v{named.version} names a base manifest {d.base_digest[:19]}… "
                f"that is not the v{base.manifest.model.version} here"
            )
        if d.model != b.model or d.dim != b.dim:
            raise BundleError(
                f"delta {named.name} v{named.version} was embedded with another model than its base"
            )

    @property
    def newest(self) -> VerifiedBundle:
        return self.delta_bundle or self.base_bundle

    @property
    def name(self) -> str:
        return self.base_bundle.manifest.model.name

    @property
    def version(self) -> int:
        return self.newest.manifest.model.version

    @property
    def model(self) -> IndexModel:
        return index_spec(self.base_bundle).model

    @property
    def items(self) -> int:
        return self.live_count + (self.delta.rows if self.delta else 0)

    def fields(self) -> dict[str, str]:
        return dict(self.base.cols.types)

    def search(self, query: np.ndarray, k: int, filter_spec: object = None) -> list[Hit]:
        """The ``k`` best live items for an (embedded) query, best first."""
        q = np.asarray(query, np.float32).reshape(-1)
        if q.shape[0] != self.base.dim:
            raise ConflictError(
                f"the query vector has {q.shape[0]} dimensions, index {self.name} holds "
                f"{self.base.dim}: it was embedded by another model"
            )
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        admitted = compile_filter(filter_spec, self.base.cols, self.base.rows)
        if self.live is not None:
            admitted = self.live if admitted is None else admitted & self.live
        found = [(s, self.base, r) for s, r in self.base.search(q, k, admitted)]
        if self.delta is not None:
            delta_admitted = compile_filter(filter_spec, self.delta.cols, self.delta.rows)
            found += [(s, self.delta, r) for s, r in self.delta.search(q, k, delta_admitted)]
        found.sort(key=lambda t: -t[0])
        return [part.hit(row, score) for score, part, row in found[:k]]
