"""Index jobs on build workers (``POST /v1/indexes``, ``PUT/DELETE /v1/indexes/{name}/items``):
build a catalog index or a delta into the version central assigned, with provenance, signed
by the worker; and the *independent* check another worker runs before it is registered.

The verifier trusts none of the builder's claims: it re-reads the catalog, checks the items
and the version lock, re-embeds a random sample of products with the model bundle and
compares them with the stored vectors, and re-measures recall@10 against exact search over
the shipped vectors with its own query embeddings.
"""

from __future__ import annotations

import datetime as dt
import secrets
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

SAMPLE = 256  # products re-embedded by the verifier (chosen at random there)
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
    got = index.get(keys.astype(np.uint64), dtype=np.float32)
    vectors = np.asarray(np.stack(got), np.float32).reshape(len(keys), -1)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _items_match(spec: IndexJobSpec, items, delta: bool) -> str:
    catalog = read_catalog(Path(spec.catalog), allow_delete=delta)
    if not delta:
        if items.ids != catalog.ids or items.texts != catalog.texts:
            return "its items are not the catalog's products (ids or texts differ)"
        return ""
    text_of = dict(zip(items.ids, items.texts, strict=True))
    wrong = [i for i, t in zip(catalog.ids, catalog.texts, strict=True) if text_of.get(i) != t]
    missing = sorted(set(catalog.deletes) - set(items.deletes))
    if wrong or missing:
        return f"the delta misses changes: upserts {wrong[:3]}, deletes {missing[:3]}"
    return ""


def verify_index_job(spec: IndexJobSpec) -> Verdict:
    """Re-check an index bundle another worker built (already checked against its signature)."""
    from usearch.index import Index

    assert spec.bundle_dir is not None
    bundle = verify_bundle(Path(spec.bundle_dir), None)
    m, model = bundle.manifest, verify_bundle(Path(spec.model_dir), None)
    threshold = spec.recall_threshold or RECALL_THRESHOLD
    thresholds = {"recall_at_10": threshold, "vector_cosine_min": VECTOR_COSINE_MIN}
    if m.model.task != "index" or m.index is None:
        return Verdict(False, {}, thresholds, "not a catalog index bundle")
    problems = []
    if m.index.model != check_model_bundle(model):
        problems.append(f"it claims to be embedded with {m.index.model}, the job names another")
    if m.index.catalog_digest != sha256_file(Path(spec.catalog)):
        problems.append("its catalog digest is not the job's catalog")
    base = _opt(spec.base_dir)
    delta = base is not None
    if base is not None and (m.index.base_digest, m.index.base_version) != (
        base.digest,
        base.manifest.model.version,
    ):
        problems.append("it names another base index")
    items = decode_items(bundle.file(ITEMS_FILE).read_bytes())
    index: Any = Index.restore(str(bundle.file(DELTA_FILE if delta else INDEX_FILE)))
    n = len(items)
    if index is None:
        return Verdict(False, {}, thresholds, "its index file is not a usearch index")
    if len(index) != n:
        problems.append(f"its index holds {len(index)} vectors for {n} items")
    elif why := _items_match(spec, items, delta):
        problems.append(why)
    metrics: dict[str, float] = {}
    if not problems and n:
        rng = np.random.default_rng(secrets.randbits(64))
        rows = np.sort(rng.choice(n, size=min(n, SAMPLE), replace=False))
        fresh = embed_texts(model, [items.texts[r] for r in rows], threads=spec.threads)
        cos = np.sum(fresh * _stored(index, rows), axis=1)
        metrics["vector_cosine_min"] = round(float(cos.min()), 6)
        metrics["vectors_checked"] = float(len(rows))
        if cos.min() < VECTOR_COSINE_MIN:
            bad = items.ids[int(rows[int(cos.argmin())])]
            problems.append(
                f"stored vector of {bad!r} is not its embedding (cosine {cos.min():.4f})"
            )
        if not delta:  # a delta is searched exactly at the edge
            queries = embed_texts(
                model, _queries(spec) or default_queries(200), threads=spec.threads
            )
            truth = exact_top(_stored(index, np.arange(n)), queries, 10)
            index.expansion_search = m.index.expansion_search
            recall = recall_at(index, truth, queries)
            metrics["recall_at_10"] = round(recall, 4)
            if recall < threshold:
                problems.append(f"recall@10 {recall:.4f} < {threshold}")
    return Verdict(not problems, metrics, thresholds, "; ".join(problems))
