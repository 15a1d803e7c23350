"""A worker's index job and the independent check of another worker's result, with a real tiny
model bundle and real usearch indexes: what passes, and each lie the verifier catches."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from artifacts.bundle import read_provenance, restamp_bundle, verify_bundle
from artifacts.catalog import read_catalog
from artifacts.digests import sha256_file
from artifacts.provenance import BuildParameters
from artifacts.signing import TrustedKeys, load_signing_key
from artifacts.wire import BuildRequest, IndexJob
from builder.index import (
    Embedded,
    IndexParams,
    check_model_bundle,
    default_queries,
    embed_texts,
    index_bundle,
)
from builder.index_job import IndexJobSpec, build_index_job, verify_index_job

PRODUCTS = [
    {"id": f"sku-{i}", "text": f"{c} number {i}", "fields": {"price": float(i)}}
    for i, c in enumerate(["red shoe", "blue lamp", "green cup", "steel pan"] * 30)
]


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def models(tiny_builds, publisher_keys, tmp_path_factory):
    """The tiny embedding model's onnx-int8 and onnx-fp32 bundles, registered as v1."""
    out, _ = tiny_builds["embedding"]
    root = tmp_path_factory.mktemp("models")
    key = load_signing_key(publisher_keys[0])
    for target in ("onnx-int8", "onnx-fp32"):
        restamp_bundle(out / target, root / target, version=1, key=key)
    return root


KEYS: list = []
PARAMS: dict = {}


def spec(models, catalog: str, tmp_path, publisher_keys, **kw) -> IndexJobSpec:
    req = BuildRequest(
        model="catalog",
        task="index",
        source_blob=sha256_file(catalog),
        targets=["index-usearch"],
        index=IndexJob(model="tiny-embedding", version=1),
    )
    params = BuildParameters.for_job(req, "index-usearch", 4)
    KEYS[:] = publisher_keys
    PARAMS.update(params.as_dict())
    return IndexJobSpec(
        model_dir=str(models / "onnx-int8"),
        catalog=catalog,
        name="catalog",
        version=4,
        out_dir=str(tmp_path / "out"),
        key_file=str(publisher_keys[0]),
        provenance={"builder": "worker-a", "params": params.as_dict()},
        **kw,
    )


def test_built_stamped_signed_and_verified(models, tmp_path, publisher_keys):
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)
    job = spec(models, catalog, tmp_path, publisher_keys)
    result = build_index_job(job)
    assert result["passed"], result
    bundle = verify_bundle(tmp_path / "out", TrustedKeys.from_paths([publisher_keys[1]]))
    m = bundle.manifest
    assert (m.model.name, m.model.version, m.target.id) == ("catalog", 4, "index-usearch")
    assert m.index.model.manifest_digest == verify_bundle(models / "onnx-int8", None).digest
    prov = read_provenance(tmp_path / "out")
    params = prov["statement"]["predicate"]["buildDefinition"]["externalParameters"]
    assert params["index"]["model"] == "tiny-embedding" and params["version"] == 4

    verdict = verify_index_job(
        spec(models, catalog, tmp_path, publisher_keys, bundle_dir=str(tmp_path / "out"))
    )
    assert verdict.passed, verdict
    assert verdict.metrics["vectors_checked"] == len(PRODUCTS)
    assert verdict.metrics["vector_cosine_min"] >= 0.99
    assert verdict.metrics["recall_at_10"] >= 0.95


def _forged(models, catalog: str, out, *, vectors_fn=None, catalog_for_items=None, dtype="i8"):
    """An index bundle built from doctored inputs, as a lying builder would ship it."""
    model = verify_bundle(models / "onnx-int8", None)
    shown = read_catalog(catalog_for_items or catalog)
    vectors = embed_texts(model, shown.texts)
    if vectors_fn is not None:
        vectors = vectors_fn(vectors)
    queries = embed_texts(model, default_queries(50))
    data = Embedded(shown, sha256_file(catalog), vectors, queries, check_model_bundle(model))
    index_bundle(
        data, "catalog", out.with_name(out.name + "-unsigned"), params=IndexParams(dtype=dtype)
    )
    return ship(out.with_name(out.name + "-unsigned"), out, catalog)


def ship(unsigned, out, catalog: str) -> str:
    """Stamp, add provenance and sign as a worker does, claiming the job's catalog digest."""
    from artifacts.bundle import read_manifest
    from builder.index_job import _stamp

    m = read_manifest(unsigned)
    m = msgspec.structs.replace(
        m, index=msgspec.structs.replace(m.index, catalog_digest=sha256_file(catalog))
    )
    job = IndexJobSpec(
        model_dir="",
        catalog=catalog,
        name="catalog",
        version=4,
        out_dir=str(out),
        key_file=str(KEYS[0]),
        provenance={"builder": "liar", "params": PARAMS},
    )
    _stamp(m, unsigned, job, "2026-11-30T00:00:00+00:00")
    return str(out)


def test_a_swapped_vector_is_caught(models, tmp_path, publisher_keys):
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)

    def swap(v: np.ndarray) -> np.ndarray:
        v = v.copy()
        v[[3, 4]] = v[[4, 3]]  # "red shoe 3" now answers for "red shoe 4"'s neighbour text
        return v

    forged = _forged(models, catalog, tmp_path / "forged", vectors_fn=swap)
    verdict = verify_index_job(spec(models, catalog, tmp_path, publisher_keys, bundle_dir=forged))
    assert not verdict.passed
    assert "is not its embedding" in verdict.reason, verdict


def test_items_that_are_not_the_catalog_are_caught(models, tmp_path, publisher_keys):
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)
    edited = [dict(r) for r in PRODUCTS]
    edited[7]["text"] = "a product the shop never listed"
    forged = _forged(
        models,
        catalog,
        tmp_path / "forged",
        catalog_for_items=write(tmp_path / "edited.jsonl", edited),
    )
    verdict = verify_index_job(spec(models, catalog, tmp_path, publisher_keys, bundle_dir=forged))
    assert verdict.reason == "its items are not what the job's catalog makes (texts differ)"


def test_another_model_bundle_is_caught(models, tmp_path, publisher_keys):
    """Embedded with onnx-int8; the job names the onnx-fp32 bundle: the lock differs."""
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)
    forged = _forged(models, catalog, tmp_path / "forged")
    job = spec(models, catalog, tmp_path, publisher_keys, bundle_dir=forged)
    job.model_dir = str(models / "onnx-fp32")
    verdict = verify_index_job(job)
    assert not verdict.passed and "claims to be embedded with" in verdict.reason


def test_a_non_finite_vector_fails_instead_of_hiding_the_rest(models, tmp_path, publisher_keys):
    """NaN compares false with everything: one NaN row must not switch the check off."""
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)

    def poison(v: np.ndarray) -> np.ndarray:
        v = v.copy()
        v[0] = np.nan
        v[[3, 4]] = v[[4, 3]]
        return v

    forged = _forged(models, catalog, tmp_path / "forged", vectors_fn=poison, dtype="f32")
    verdict = verify_index_job(spec(models, catalog, tmp_path, publisher_keys, bundle_dir=forged))
    assert not verdict.passed and "non-finite" in verdict.reason, verdict


def test_edited_fields_are_caught(models, tmp_path, publisher_keys):
    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)
    edited = [json.loads(json.dumps(r)) for r in PRODUCTS]
    edited[9]["fields"]["price"] = 0.01  # a filter `price < 1` now surfaces it
    forged = _forged(
        models,
        catalog,
        tmp_path / "forged",
        catalog_for_items=write(tmp_path / "edited.jsonl", edited),
    )
    verdict = verify_index_job(spec(models, catalog, tmp_path, publisher_keys, bundle_dir=forged))
    assert not verdict.passed and "fields differ" in verdict.reason, verdict


def test_deltas_are_rebuilt_and_compared_exactly(models, tmp_path, publisher_keys):
    from builder.index import DeltaBuild, build_delta

    catalog = write(tmp_path / "catalog.jsonl", PRODUCTS)
    assert build_index_job(spec(models, catalog, tmp_path, publisher_keys))["passed"]
    base = tmp_path / "out"  # v4 of "catalog"
    changes = write(
        tmp_path / "changes.jsonl",
        [{"id": "sku-1", "text": "blue lamp number 1", "fields": {"price": 0.5}}],
    )
    delta_spec = spec(models, changes, tmp_path, publisher_keys, base_dir=str(base))
    delta_spec.out_dir = str(tmp_path / "delta")
    delta_spec.version = 5
    assert build_index_job(delta_spec)["passed"]
    delta_spec.bundle_dir = delta_spec.out_dir
    assert verify_index_job(delta_spec).passed

    # a builder that slipped in an extra change (a product rewritten, another deleted)
    sneaky = write(
        tmp_path / "sneaky.jsonl",
        [
            {"id": "sku-1", "text": "blue lamp number 1", "fields": {"price": 0.5}},
            {"id": "sku-2", "text": "buy from evil.example"},
            {"id": "sku-3", "delete": True},
        ],
    )
    model = verify_bundle(models / "onnx-int8", None)
    build_delta(
        DeltaBuild(
            base=verify_bundle(base, None), model=model, changes=sneaky, out=tmp_path / "sneaky0"
        )
    )
    delta_spec.bundle_dir = ship(tmp_path / "sneaky0", tmp_path / "sneaky", changes)
    verdict = verify_index_job(delta_spec)
    assert not verdict.passed, verdict
    assert verdict.reason == "its items are not what the job's catalog makes (ids differ)"

    # a delta shipped for a full index job
    full_job = spec(models, changes, tmp_path, publisher_keys, bundle_dir=str(tmp_path / "delta"))
    verdict = verify_index_job(full_job)
    assert not verdict.passed and "a full index job shipped a delta" in verdict.reason
