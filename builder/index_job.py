"""Index jobs on build workers (``POST /v1/indexes``, ``PUT/DELETE /v1/indexes/{name}/items``):
build a catalog index or a delta into the version central assigned, with provenance, signed
by the worker; and the *independent* check another worker runs before it is registered.

The verifier trusts none of the builder's claims: it recomputes the items the catalog (and
for a delta, the base and previous delta) must give and requires them exactly, checks the
version lock, the files and the counts, re-embeds *every* product with the model bundle and
compares it with its stored vector, and re-measures recall@10 against exact search over its
own embeddings with its own query embeddings.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from artifacts.bundle import VerifiedBundle, verify_bundle, write_bundle
from artifacts.catalog import DELTA_FILE, INDEX_FILE, ITEMS_FILE, decode_items, read_catalog
from artifacts.digests import sha256_file
from artifacts.errors import InputError
from artifacts.manifest import Manifest
from artifacts.provenance import (
    PROVENANCE_FILE,
    BuildParameters,
    provenance_statement,
    sign_statement,
)
from artifacts.signing import load_signing_key
from builder.index import (
    RECALL_THRESHOLD,
    DeltaBuild,
    IndexBuild,
    IndexParams,
    build_delta,
    build_index,
    check_model_bundle,
    default_queries,
    embed_texts,
    exact_top,
    recall_at,
)
from builder.verify import Verdict

VECTOR_COSINE_MIN = 0.99  # stored (int8/f16/f32) vs freshly embedded


class IndexJobSpec(msgspec.Struct, kw_only=True):
    """What the child process is asked to build or check."""

    model_dir: str  # the embedding model bundle, pulled and verified by the worker
    catalog: str  # the catalog (full) or the changes (delta), JSONL
    name: str
    version: int
    base_dir: str | None = None
    previous_dir: str | None = None
    queries: str | None = None
    vectors: str | None = None  # a full index from vectors embedded elsewhere (.npy)
    recall_threshold: float | None = None
    threads: int = 0
    out_dir: str = ""
    key_file: str | None = None
    provenance: dict | None = None  # {builder, params}
    bundle_dir: str | None = None  # verify: the bundle another worker built


def _queries(spec: IndexJobSpec) -> list[str] | None:
    if spec.queries is None:
        return None
    queries = [q for q in Path(spec.queries).read_text().splitlines() if q.strip()]
    if not queries:
        raise InputError("the queries file holds no queries")
    return queries


def _opt(path: str | None) -> VerifiedBundle | None:
    return verify_bundle(Path(path), None) if path else None


def build_index_job(spec: IndexJobSpec) -> dict:
    """Build (full or delta) unsigned, then stamp the version, add provenance and sign."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    model = verify_bundle(Path(spec.model_dir), None)
    base = _opt(spec.base_dir)
    with tempfile.TemporaryDirectory(prefix="shipyard-index-job-") as tmp:
        unsigned = Path(tmp) / "bundle"
        if base is not None:
            manifest = build_delta(
                DeltaBuild(
                    base=base,
                    model=model,
                    changes=Path(spec.catalog),
                    out=unsigned,
                    previous=_opt(spec.previous_dir),
                )
            )
        else:
            threshold = spec.recall_threshold or RECALL_THRESHOLD
            manifest = build_index(
                IndexBuild(
                    model=model,
                    catalog=Path(spec.catalog),
                    name=spec.name,
                    out=unsigned,
                    params=IndexParams(threads=spec.threads, recall_threshold=threshold),
                    queries=_queries(spec),
                    vectors=Path(spec.vectors) if spec.vectors else None,
                )
            )
        if not manifest.quality.passed:
            tries = "; ".join(f"{a.config}: {a.reason}" for a in manifest.quality.attempts)
            return {"passed": False, "reason": f"recall gate: {tries}", "retry": False}
        _stamp(manifest, unsigned, spec, started)
    return {"passed": True, "reason": "", "path": spec.out_dir}


def _stamp(manifest: Manifest, src: Path, spec: IndexJobSpec, started: str) -> None:
    if spec.key_file is None or spec.provenance is None:
        raise InputError("an index job needs the worker's key and the provenance parameters")
    key = load_signing_key(Path(spec.key_file))
    stamped = msgspec.structs.replace(
        manifest, model=msgspec.structs.replace(manifest.model, version=spec.version)
    )
    files: dict[str, Path | bytes] = {f.path: src / f.path for f in manifest.files}
    statement = provenance_statement(
        files={f.path: f.sha256 for f in manifest.files},
        params=BuildParameters(**spec.provenance["params"]),
        builder=spec.provenance["builder"],
        toolchain=manifest.build.toolchain,
        metrics=manifest.quality.metrics,
        started=started,
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    files[PROVENANCE_FILE] = sign_statement(statement, key)
    write_bundle(Path(spec.out_dir), stamped, files, key=key, overwrite=True)


# ---- independent verification ----------------------------------------------------------------


def _stored(index, keys: np.ndarray) -> np.ndarray:
    """Stored vectors by key, normalised; a missing key or non-finite value raises."""
    got = index.get(keys.astype(np.uint64), dtype=np.float32)
    if any(v is None for v in got):
        raise InputError("the index lacks some of the keys 0..n-1")
    vectors = np.asarray(np.stack(got), np.float32).reshape(len(keys), -1)
    if not np.isfinite(vectors).all():
        raise InputError("the index stores non-finite vectors")
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _same_items(got, want) -> str:
    """Exact equality of ids, texts, field columns (types and values) and deletes."""
    fields = {n: (c.type, c.values) for n, c in got.fields.items()}
    expected = {n: (c.type, c.values) for n, c in want.fields.items()}
    for what, a, b in (
        ("ids", got.ids, want.ids),
        ("texts", got.texts, want.texts),
        ("fields", fields, expected),
        ("deletes", sorted(got.deletes), sorted(want.deletes)),
    ):
        if a != b:
            return f"its items are not what the job's catalog makes ({what} differ)"
    return ""


def _expected_items(spec: IndexJobSpec, base: VerifiedBundle | None):
    from builder.index import expected_delta_items

    if base is None:
        return read_catalog(Path(spec.catalog))
    return expected_delta_items(base, _opt(spec.previous_dir), Path(spec.catalog))


def _shape_problems(m: Manifest, bundle: VerifiedBundle, base, model_dim: int, n: int) -> list[str]:
    """The manifest's claims a verifier can check without running anything."""
    assert m.index is not None
    delta = base is not None
    problems = []
    data_file = DELTA_FILE if delta else INDEX_FILE
    files = {f.path for f in m.files}
    if files != {data_file, ITEMS_FILE, PROVENANCE_FILE}:
        problems.append(f"it ships {sorted(files)}, not {data_file}, {ITEMS_FILE} and provenance")
    if delta:
        if (m.index.base_digest, m.index.base_version) != (
            base.digest,
            base.manifest.model.version,
        ):
            problems.append("it names another base index")
    elif m.index.base_version or m.index.base_digest:
        problems.append("a full index job shipped a delta")
    if m.index.items != n or m.index.dim != model_dim:
        problems.append(f"its manifest claims {m.index.items} items of {m.index.dim} dimensions")
    return problems


def verify_index_job(spec: IndexJobSpec) -> Verdict:
    """Re-check an index bundle another worker built (already checked against its signature):
    every product is re-embedded and compared with its stored vector."""
    from usearch.index import Index

    assert spec.bundle_dir is not None
    bundle = verify_bundle(Path(spec.bundle_dir), None)
    m, model = bundle.manifest, verify_bundle(Path(spec.model_dir), None)
    threshold = spec.recall_threshold or RECALL_THRESHOLD
    thresholds = {"recall_at_10": threshold, "vector_cosine_min": VECTOR_COSINE_MIN}
    if m.model.task != "index" or m.index is None:
        return Verdict(False, {}, thresholds, "not a catalog index bundle")
    base = _opt(spec.base_dir)
    delta = base is not None
    problems = []
    if m.index.model != check_model_bundle(model):
        problems.append(f"it claims to be embedded with {m.index.model}, the job names another")
    if m.index.catalog_digest != sha256_file(Path(spec.catalog)):
        problems.append("its catalog digest is not the job's catalog")
    items = decode_items(bundle.file(ITEMS_FILE).read_bytes())
    n = len(items)
    problems += _shape_problems(m, bundle, base, model.manifest.io.dim, n)
    if not problems and (why := _same_items(items, _expected_items(spec, base))):
        problems.append(why)
    index: Any = (
        None if problems else Index.restore(str(bundle.file(DELTA_FILE if delta else INDEX_FILE)))
    )
    if not problems and (index is None or len(index) != n or index.ndim != m.index.dim):
        problems.append("its index file does not hold one vector per item")
    metrics: dict[str, float] = {}
    if not problems and n:
        try:
            stored = _stored(index, np.arange(n))
        except InputError as exc:
            return Verdict(False, metrics, thresholds, str(exc))
        fresh = embed_texts(model, items.texts, threads=spec.threads)
        cos = np.sum(fresh * stored, axis=1)
        metrics["vector_cosine_min"] = round(float(np.nan_to_num(cos, nan=-1.0).min()), 6)
        metrics["vectors_checked"] = float(n)
        if not np.all(cos >= VECTOR_COSINE_MIN):  # NaN fails too
            worst = int(np.argmin(np.nan_to_num(cos, nan=-1.0)))
            problems.append(
                f"stored vector of {items.ids[worst]!r} is not its embedding "
                f"(cosine {cos[worst]:.4f})"
            )
        if not delta and not problems:  # a delta is searched exactly at the edge
            queries = embed_texts(
                model, _queries(spec) or default_queries(200), threads=spec.threads
            )
            truth = exact_top(fresh, queries, 10)  # the verifier's own vectors
            index.expansion_search = m.index.expansion_search
            recall = recall_at(index, truth, queries)
            metrics["recall_at_10"] = round(recall, 4)
            if recall < threshold:
                problems.append(f"recall@10 {recall:.4f} < {threshold}")
    return Verdict(not problems, metrics, thresholds, "; ".join(problems))
