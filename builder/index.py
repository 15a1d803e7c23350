"""Catalog index bundles: embed a catalog with one *registered* model bundle, build a usearch
HNSW index over it, measure its recall against exact FP32 search, sign.

The index names the model bundle it was embedded with (name, version, target, manifest digest):
an edge node serves search only when the model it is serving is that version, so query and
product vectors always come from the same model. Deltas (:func:`build_delta`) are cumulative
over one full index: a node needs the base and the newest delta, never a chain.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from artifacts.bundle import VerifiedBundle, write_bundle
from artifacts.catalog import (
    DELTA_FILE,
    INDEX_FILE,
    ITEMS_FILE,
    Catalog,
    FieldColumn,
    decode_items,
    read_catalog,
)
from artifacts.digests import sha256_file
from artifacts.errors import InputError
from artifacts.manifest import (
    Attempt,
    BuildInfo,
    IndexModel,
    IndexSpec,
    IOSpec,
    Manifest,
    ModelInfo,
    Perf,
    Quality,
    TargetInfo,
)
from artifacts.signing import SigningKey
from artifacts.targets import INDEX_TARGET
from artifacts.textproc import TextEncoder, run_items
from builder.bench import host_info
from builder.verify import bundle_runner

RECALL_THRESHOLD = 0.95
EXPANSION_LADDER = (64, 128, 256, 512)  # expansion_search tried until recall@10 clears the bar
DTYPE_LADDER = ("i8", "f16", "f32")  # then wider vectors
PRECISION = {"i8": "int8", "f16": "fp16", "f32": "fp32"}
Progress = Callable[[int, int], None]  # (done, total) items embedded


@dataclass(frozen=True)
class IndexParams:
    """HNSW settings (usearch names). ``i8`` vectors: 4x smaller than f32, recall measured."""

    dtype: str = "i8"  # the first rung of DTYPE_LADDER to try
    connectivity: int = 32  # measured on 100k products (bench/search.py): M=16 caps recall lower
    expansion_add: int = 200
    recall_threshold: float = RECALL_THRESHOLD
    recall_queries: int = 200
    threads: int = 0  # 0: every core


@dataclass
class IndexBuild:
    """What one call needs: the model bundle (verified by the caller), the catalog, where to write."""

    model: VerifiedBundle
    catalog: Path
    name: str
    out: Path
    key: SigningKey | None = None
    params: IndexParams = field(default_factory=IndexParams)
    queries: list[str] | None = None  # recall is measured with these (default: generated queries)
    overwrite: bool = False
    progress: Progress | None = None
    vectors: Path | None = None  # embedded elsewhere (float32 .npy, one row per catalog line)


def load_vectors(path: Path, n: int, dim: int) -> np.ndarray:
    """Vectors embedded elsewhere (the catalog queue's workers), checked for shape and values
    and normalised; whether they are the model's embeddings is the verifier's check."""
    try:  # memory-mapped: the header is checked before any row is read
        vectors = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"the vectors file is not a float32 .npy array: {exc}") from exc
    if not isinstance(vectors, np.ndarray):  # an .npz archive
        raise InputError("the vectors file is not a float32 .npy array")
    if vectors.dtype != np.float32 or vectors.shape != (n, dim):
        raise InputError(
            f"the vectors file holds {vectors.dtype} {vectors.shape}, the catalog needs "
            f"float32 ({n}, {dim})"
        )
    if not np.isfinite(vectors).all():
        raise InputError("the vectors file holds non-finite values")
    vectors = np.array(vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if n and float(norms.min()) < 1e-6:
        raise InputError("the vectors file holds a zero vector")
    return vectors / norms


def check_model_bundle(model: VerifiedBundle) -> IndexModel:
    m = model.manifest
    if m.model.task != "embedding":
        raise InputError(
            f"{m.model.name} is a {m.model.task} model; an index needs an embedding model"
        )
    if m.model.version < 1:
        raise InputError(
            f"{m.model.name} {m.target.id} has no registered version (v0): push it first, "
            "so the index can be locked to the version edge nodes serve"
        )
    return IndexModel(
        name=m.model.name,
        version=m.model.version,
        target=m.target.id,
        manifest_digest=model.digest,
        source_digest=m.model.source_digest,
    )


def embed_texts(
    model: VerifiedBundle, texts: list[str], *, threads: int = 0, progress: Progress | None = None
) -> np.ndarray:
    """Unit vectors for ``texts`` as the bundle computes them (length-sorted batches of 32)."""
    m = model.manifest
    encoder = TextEncoder.for_bundle(model.path, m)
    runner = bundle_runner(model, threads)
    out = np.zeros((len(texts), m.io.dim), np.float32)
    block = 2048
    for start in range(0, len(texts), block):
        chunk = texts[start : start + block]
        out[start : start + len(chunk)] = run_items(
            encoder, chunk, runner, runner.input_names, pad_id=m.tokenizer.pad_token_id
        )
        if progress is not None:
            progress(start + len(chunk), len(texts))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def default_queries(n: int) -> list[str]:
    """Shopper-style queries from a seed the shipped corpus does not use."""
    from builder.data.corpus import generate

    return generate(seed=7_2026, n_products=max(200, n), n_descriptions=0, n_queries=n).queries


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the exact FP32 top ``k`` per query (the truth recall is measured against)."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def recall_at(index, truth: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    found = index.search(queries, truth.shape[1])
    keys = np.asarray(found.keys).reshape(len(queries), -1)
    hits = [len(set(keys[i].tolist()) & set(truth[i].tolist())) for i in range(len(queries))]
    return float(np.sum(hits) / truth.size)


def _usearch():
    from usearch.index import Index

    return Index


def _library() -> str:
    import usearch

    return f"usearch {usearch.__version__}"


def _manifest(name: str, spec: IndexSpec, quality: Quality, started: str, dim: int) -> Manifest:
    """An index bundle's manifest (version 0 until pushed)."""
    precision = PRECISION[spec.dtype]
    return Manifest(
        model=ModelInfo(name=name, version=0, task="index", source_digest=spec.catalog_digest),
        target=TargetInfo(id=INDEX_TARGET, backend="usearch", precision=precision),  # type: ignore[arg-type]
        io=IOSpec(inputs=[], outputs=[], max_batch=1, dim=dim, normalize=True),
        quality=quality,
        perf=Perf(
            host=host_info(os.cpu_count() or 0), notes="build_s: embedding + HNSW construction"
        ),
        build=BuildInfo(
            toolchain={"usearch": spec.library.split()[-1]},
            started_at=started,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ),
        index=spec,
    )


def _first_passing(
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    p: IndexParams,
    dtype: str,
    attempts: list[Attempt],
):
    """One HNSW graph of ``dtype`` vectors; raise ``expansion_search`` until recall@10 clears
    the bar (quantised vectors cap recall however wide the search: then the next dtype)."""
    index = _usearch()(
        ndim=vectors.shape[1],
        metric="cos",
        dtype=dtype,
        connectivity=p.connectivity,
        expansion_add=p.expansion_add,
    )
    # One thread: the file then stores the vectors in key order, so an edge node can map them
    # as a matrix for exact filtered search (it checks that on load).
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=1)
    recall, previous = 0.0, -1.0
    for expansion in EXPANSION_LADDER:
        index.expansion_search = expansion
        recall = recall_at(index, truth, queries)
        passed = recall >= p.recall_threshold
        attempts.append(
            Attempt(
                config=f"hnsw-m{p.connectivity}-ef{expansion}-{dtype}",
                passed=passed,
                metrics={"recall_at_10": round(recall, 4)},
                reason="" if passed else f"recall@10 {recall:.4f} < {p.recall_threshold}",
            )
        )
        if passed or recall - previous < 0.002:
            break  # passed, or a plateau: the vectors' precision caps recall, not the search
        previous = recall
    return index, recall


@dataclass(frozen=True)
class Embedded:
    """A catalog and its vectors (unit length, row ``i`` for item ``i``), ready to index."""

    catalog: Catalog
    catalog_digest: str
    vectors: np.ndarray
    queries: np.ndarray  # query vectors recall is measured with
    lock: IndexModel
    embed_s: float | None = None


def index_bundle(
    data: Embedded,
    name: str,
    out: Path,
    *,
    params: IndexParams | None = None,
    key: SigningKey | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Index embedded vectors: the first (dtype, expansion_search) whose recall@10 against
    exact FP32 search clears the bar; the manifest records every try. Signed when ``key``."""
    p = params or IndexParams()
    t0 = time.perf_counter()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    truth = exact_top(data.vectors, data.queries, 10)
    attempts: list[Attempt] = []
    for dtype in DTYPE_LADDER[DTYPE_LADDER.index(p.dtype) :]:
        index, recall = _first_passing(data.vectors, data.queries, truth, p, dtype, attempts)
        if attempts[-1].passed:
            break
    dim = data.vectors.shape[1]
    spec = IndexSpec(
        model=data.lock,
        catalog_digest=data.catalog_digest,
        items=len(data.catalog),
        dim=dim,
        dtype=dtype,  # type: ignore[arg-type]
        library=_library(),
        connectivity=p.connectivity,
        expansion_add=p.expansion_add,
        expansion_search=int(index.expansion_search),
        fields={n: c.type for n, c in data.catalog.fields.items()},
        recall_at_10=round(recall, 4),
        build_s=round(time.perf_counter() - t0, 2),
        embed_s=data.embed_s,
    )
    quality = Quality(
        reference="exact-fp32-search",
        metrics={"recall_at_10": round(recall, 4)},
        thresholds={"recall_at_10": p.recall_threshold},
        passed=attempts[-1].passed,
        eval_items=len(data.queries),
        config=attempts[-1].config,
        attempts=attempts,
    )
    with tempfile.TemporaryDirectory(prefix="shipyard-index-") as tmp:
        file = Path(tmp) / INDEX_FILE
        index.save(str(file))
        return write_bundle(
            out,
            _manifest(name, spec, quality, when, dim),
            {INDEX_FILE: file, ITEMS_FILE: msgspec.json.encode(data.catalog.to_doc())},
            key=key,
            overwrite=overwrite,
        )


def embed_catalog(job: IndexBuild) -> Embedded:
    lock = check_model_bundle(job.model)
    catalog = read_catalog(job.catalog)
    if catalog.deletes:
        raise InputError("a catalog holds products only; deletes belong in `artifact index update`")
    p = job.params
    t0 = time.perf_counter()
    if job.vectors is not None:
        vectors = load_vectors(job.vectors, len(catalog), job.model.manifest.io.dim)
    else:
        vectors = embed_texts(job.model, catalog.texts, threads=p.threads, progress=job.progress)
    embed_s = round(time.perf_counter() - t0, 2)
    queries = embed_texts(job.model, job.queries or default_queries(p.recall_queries))
    return Embedded(catalog, sha256_file(job.catalog), vectors, queries, lock, embed_s)


def build_index(job: IndexBuild) -> Manifest:
    """Embed the catalog with the model bundle, then :func:`index_bundle`."""
    return index_bundle(
        embed_catalog(job),
        job.name,
        job.out,
        params=job.params,
        key=job.key,
        overwrite=job.overwrite,
    )


@dataclass
class DeltaBuild:
    """A cumulative delta over ``base`` (a full index), carrying ``previous``'s changes too."""

    base: VerifiedBundle
    model: VerifiedBundle
    changes: Path
    out: Path
    previous: VerifiedBundle | None = None
    key: SigningKey | None = None
    overwrite: bool = False


def _delta_state(previous: VerifiedBundle | None) -> tuple[Catalog, np.ndarray | None]:
    if previous is None:
        return Catalog(), None
    items = decode_items(previous.file(ITEMS_FILE).read_bytes())
    index = _usearch().restore(str(previous.file(DELTA_FILE)))
    n, dim = len(items), int(index.ndim)
    if not n:
        return items, np.zeros((0, dim), np.float32)
    # by key: usearch lists `vectors` in its internal order, not the order they were added
    got = index.get(np.arange(n, dtype=np.uint64), dtype=np.float32)
    return items, np.asarray(np.stack(got), np.float32).reshape(n, dim)


def _fill_from_current(changes: Catalog, current: list[Catalog], types: dict[str, str]) -> None:
    """An upsert replaces a product; a field it leaves out keeps the value the product has now
    (in the newest delta, else the base), so a price change need not restate the category."""
    for name, kind in types.items():
        col = changes.fields.get(name)
        if col is None:
            col = changes.fields[name] = FieldColumn(type=kind, values=[None] * len(changes))  # type: ignore[arg-type]
        elif col.type != kind:
            raise InputError(f"field {name!r} is {col.type} in the changes but {kind} in the index")
    lookups = [({i: r for r, i in enumerate(c.ids)}, c) for c in current]
    for row, item in enumerate(changes.ids):
        for rows, cat in lookups:
            at = rows.get(item)
            if at is None:
                continue
            for name, col in changes.fields.items():
                have = cat.fields.get(name)
                if col.values[row] is None and have is not None:
                    col.values[row] = have.values[at]
            break


def _merge(
    old: Catalog, old_vectors: np.ndarray | None, new: Catalog, new_vectors: np.ndarray
) -> tuple[Catalog, np.ndarray]:
    """``new`` wins: its upserts replace, its deletes remove an earlier upsert."""
    changed = set(new.ids) | set(new.deletes)
    keep = [i for i, item in enumerate(old.ids) if item not in changed]
    merged = Catalog(
        ids=[old.ids[i] for i in keep] + new.ids,
        texts=[old.texts[i] for i in keep] + new.texts,
        deletes=sorted((set(old.deletes) - set(new.ids)) | set(new.deletes)),
    )
    names = list(dict.fromkeys([*old.fields, *new.fields]))
    for name in names:
        a, b = old.fields.get(name), new.fields.get(name)
        if a is not None and b is not None and a.type != b.type:
            raise InputError(f"field {name!r} changes type from {a.type} to {b.type}")
        kind = (a or b).type  # type: ignore[union-attr]
        values: list[str | float | bool | None] = (
            [a.values[i] for i in keep] if a else [None] * len(keep)
        )
        values += b.values if b else [None] * len(new)
        merged.fields[name] = FieldColumn(type=kind, values=values)
    parts = [new_vectors] if old_vectors is None else [old_vectors[keep], new_vectors]
    return merged, np.concatenate(parts).astype(np.float32)


def plan_delta(
    base: VerifiedBundle, previous: VerifiedBundle | None, changes_path: Path
) -> tuple[Catalog, Catalog, np.ndarray | None]:
    """The changes (a field left out filled from the product's current value) and the
    previous delta's items and vectors they accumulate over."""
    spec = base.manifest.index
    assert spec is not None
    changes = read_catalog(changes_path, allow_delete=True)
    old, old_vectors = _delta_state(previous)
    base_items = decode_items(base.file(ITEMS_FILE).read_bytes())
    types = {**spec.fields, **{n: c.type for n, c in old.fields.items()}}
    _fill_from_current(changes, [old, base_items], types)
    return changes, old, old_vectors


def expected_delta_items(
    base: VerifiedBundle, previous: VerifiedBundle | None, changes_path: Path
) -> Catalog:
    """What a delta's ``items.json`` must hold: exactly what :func:`build_delta` writes."""
    changes, old, old_vectors = plan_delta(base, previous, changes_path)
    dim = old_vectors.shape[1] if old_vectors is not None else 1
    merged, _ = _merge(old, old_vectors, changes, np.zeros((len(changes), dim), np.float32))
    return merged


def build_delta(job: DeltaBuild) -> Manifest:
    """A delta bundle: the changed products embedded by the base's model, exact-searched at the
    edge; deletes masked out. Signed like any bundle; the next version of the same index."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    base = job.base.manifest
    if base.index is None or base.index.base_version or base.model.version < 1:
        raise InputError("--base must be a registered full index bundle (not a delta)")
    lock = check_model_bundle(job.model)
    if lock != base.index.model:
        raise InputError(
            f"the index was embedded with {base.index.model.name} v{base.index.model.version} "
            f"{base.index.model.target}; pass that model bundle, not v{lock.version} {lock.target}"
        )
    if job.previous is not None:
        prev = job.previous.manifest.index
        if prev is None or prev.base_digest != job.base.digest:
            raise InputError("--previous is not a delta of this base")
    changes, old, old_vectors = plan_delta(job.base, job.previous, job.changes)
    new_vectors = (
        embed_texts(job.model, changes.texts)
        if len(changes)
        else np.zeros((0, base.index.dim), np.float32)
    )
    merged, vectors = _merge(old, old_vectors, changes, new_vectors)
    Index = _usearch()
    index = Index(ndim=base.index.dim, metric="cos", dtype="f32")
    if len(merged):
        index.add(np.arange(len(merged), dtype=np.uint64), vectors, threads=1)
    spec = msgspec.structs.replace(
        base.index,
        catalog_digest=sha256_file(job.changes),
        items=len(merged),
        dtype="f32",
        recall_at_10=1.0,  # exact search
        build_s=round(time.perf_counter() - t0, 2),
        base_version=base.model.version,
        base_digest=job.base.digest,
        upserts=len(merged),
        deletes=len(merged.deletes),
        fields={**base.index.fields, **{n: c.type for n, c in merged.fields.items()}},
    )
    quality = Quality(
        reference="exact-fp32-search",
        metrics={"recall_at_10": 1.0},
        thresholds={"recall_at_10": RECALL_THRESHOLD},
        passed=True,
        eval_items=len(merged),
        config="exact-f32",
    )
    with tempfile.TemporaryDirectory(prefix="shipyard-delta-") as tmp:
        file = Path(tmp) / DELTA_FILE
        index.save(str(file))
        return write_bundle(
            job.out,
            _manifest(base.model.name, spec, quality, started, base.index.dim),
            {DELTA_FILE: file, ITEMS_FILE: msgspec.json.encode(merged.to_doc())},
            key=job.key,
            overwrite=job.overwrite,
        )
