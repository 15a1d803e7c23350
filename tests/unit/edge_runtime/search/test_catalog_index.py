"""CatalogIndex on real usearch bundles built from clustered random vectors: ANN recall,
filtered search exact against brute force, tampered and mislabelled bundles refused."""

from __future__ import annotations

import numpy as np
import pytest

from artifacts.bundle import restamp_bundle, verify_bundle
from artifacts.catalog import Catalog, FieldColumn
from artifacts.errors import BundleError, NotReady
from artifacts.manifest import IndexModel
from artifacts.signing import TrustedKeys, load_signing_key
from builder.index import Embedded, exact_top, index_bundle
from edge_runtime.config import EdgeConfig, IndexSection, ModelSection
from edge_runtime.search.catalog_index import EXACT_ROWS, EXACT_ROWS_SLOW, CatalogIndex
from edge_runtime.search.service import IndexMismatch, IndexService
from edge_runtime.sync import BundleCache

N, DIM = 6000, 32
LOCK = IndexModel(name="emb", version=3, target="onnx-int8", manifest_digest="sha256:" + "a" * 64)


def clustered(rng, n) -> np.ndarray:
    centers = rng.standard_normal((40, DIM))
    v = centers[rng.integers(0, 40, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory, publisher_keys):
    rng = np.random.default_rng(5)
    vectors = clustered(rng, N)
    cats = ["shoes", "lamps", "cups", "hats", "rare"]
    category = [cats[i % 4] if i % 500 else "rare" for i in range(N)]
    cat = Catalog(
        ids=[f"sku-{i}" for i in range(N)],
        texts=[f"item {i}" for i in range(N)],
        fields={
            "category": FieldColumn(type="str", values=category),
            "price": FieldColumn(type="number", values=[float(i % 997) for i in range(N)]),
        },
    )
    queries = clustered(rng, 200)
    root = tmp_path_factory.mktemp("index")
    key = load_signing_key(publisher_keys[0])
    m = index_bundle(
        Embedded(cat, "sha256:" + "b" * 64, vectors, queries, LOCK), "cat", root / "v0", key=key
    )
    restamp_bundle(root / "v0", root / "v1", version=1, key=key)
    trusted = TrustedKeys.from_paths([publisher_keys[1]])
    return {
        "manifest": m,
        "bundle": verify_bundle(root / "v1", trusted),
        "vectors": vectors,
        "queries": queries,
        "catalog": cat,
        "trusted": trusted,
        "root": root,
    }


def test_manifest_records_lock_ann_parameters_and_recall(built):
    m = built["manifest"]
    assert m.model.task == "index" and m.target.id == "index-usearch"
    assert m.index.model == LOCK and m.index.items == N and m.index.dim == DIM
    assert m.index.fields == {"category": "str", "price": "number"}
    assert m.quality.passed and m.index.recall_at_10 >= 0.95
    assert m.quality.attempts[-1].config.startswith("hnsw-m32-ef")
    assert {f.path for f in m.files} == {"index.usearch", "items.json"}


def test_unfiltered_search_recall_against_exact(built):
    ix = CatalogIndex(built["bundle"])
    truth = exact_top(built["vectors"], built["queries"], 10)
    found = 0
    for q, t in zip(built["queries"], truth, strict=True):
        hits = ix.search(q, 10)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        found += len({int(h.id[4:]) for h in hits} & set(t.tolist()))
    assert found / truth.size >= 0.95


@pytest.mark.parametrize(
    "spec",
    [
        {"category": "rare"},  # 12 rows: exact path
        {"category": "shoes", "price": {"lt": 100}},  # ~150 rows: exact path
        {"category": {"in": ["shoes", "lamps"]}},  # half the catalog: ANN with over-fetch
    ],
)
@pytest.mark.parametrize("mapped", [True, False], ids=["matrix", "one-by-one"])
def test_filtered_search_returns_the_best_admitted_items(built, spec, mapped):
    ix = CatalogIndex(built["bundle"])
    assert ix.base.matrix is not None  # the builder's single-threaded file maps as a matrix
    if not mapped:
        ix.base.matrix = None  # what a file without key-ordered vectors gets
    cat, vectors = built["catalog"], built["vectors"]
    cats = np.array(cat.fields["category"].values)
    price = np.array(cat.fields["price"].values)
    admitted = np.isin(
        cats, spec["category"]["in"] if isinstance(spec["category"], dict) else [spec["category"]]
    )
    if "price" in spec:
        admitted &= price < 100
    overlap = 0
    for q in built["queries"][:50]:
        hits = ix.search(q, 10, spec)
        rows = np.array([int(h.id[4:]) for h in hits])
        assert admitted[rows].all()
        assert len(hits) == min(10, int(admitted.sum()))
        allowed = np.flatnonzero(admitted)
        best = allowed[np.argsort(-(vectors[allowed] @ q))[:10]]
        overlap += len(set(rows.tolist()) & set(best.tolist()))
    exact_up_to = EXACT_ROWS if mapped else EXACT_ROWS_SLOW
    need = 1.0 if admitted.sum() <= exact_up_to else 0.95
    assert overlap / (50 * min(10, int(admitted.sum()))) >= need


def test_hits_carry_text_and_fields(built):
    ix = CatalogIndex(built["bundle"])
    hit = ix.search(built["vectors"][42], 1)[0]
    assert hit.id == "sku-42" and hit.text == "item 42"
    assert hit.fields == {"category": "cups", "price": 42.0}
    assert hit.score > 0.99


def service(built, tmp_path, serving=3) -> IndexService:
    cfg = EdgeConfig(models=[ModelSection(name="emb")])
    spec = IndexSection(name="cat", model="emb")
    return IndexService(
        spec, cfg, None, BundleCache(tmp_path / "cache"), built["trusted"], lambda: serving
    )  # type: ignore[arg-type]


def test_service_locks_search_to_the_model_version(built, tmp_path):
    svc = service(built, tmp_path)
    with pytest.raises(NotReady, match="not loaded yet"):
        svc.for_model_version(3)
    assert svc.swap_gate(3) is not None
    assert svc._install(1, built["bundle"].path)
    assert svc.for_model_version(3).version == 1 and svc.swap_gate(3) is None
    with pytest.raises(IndexMismatch, match="no version built for emb v4") as err:
        svc.for_model_version(4)
    assert err.value.status == 409
    assert svc.swap_gate(4) == "index cat for emb v4 is not loaded yet"
    st = svc.status()
    assert st["state"] == "ready" and st["loaded"][0]["model_version"] == 3


def test_service_refuses_tampered_and_foreign_indexes(built, tmp_path, publisher_keys):
    import shutil

    bad = tmp_path / "tampered"
    shutil.copytree(built["bundle"].path, bad)
    items = bad / "items.json"
    items.write_bytes(items.read_bytes().replace(b"item 42", b"item 43"))
    svc = service(built, tmp_path)
    assert not svc._install(1, bad)
    assert "refused" in svc.last_error and "digest" in svc.last_error.lower()
    assert svc.state == "not-ready" and not svc.loaded
    # an index built with another model's vectors is refused for this pairing
    other = IndexSection(name="cat", model="other-model")
    svc2 = IndexService(
        other,
        EdgeConfig(models=[ModelSection(name="other-model")]),
        None,  # type: ignore[arg-type]
        BundleCache(tmp_path / "c2"),
        built["trusted"],
        lambda: 3,
    )
    assert not svc2._install(1, built["bundle"].path)
    assert "model 'emb'" in svc2.last_error


def test_the_file_must_be_what_the_manifest_says(built, tmp_path):
    import msgspec

    from artifacts.bundle import write_bundle
    from artifacts.errors import ConflictError

    m = built["bundle"].manifest
    files = {f.path: built["bundle"].file(f.path) for f in m.files}
    other = "f32" if m.index.dtype != "f32" else "i8"
    for i, index in enumerate(
        [
            msgspec.structs.replace(m.index, dtype=other),
            msgspec.structs.replace(m.index, dim=DIM + 1),
        ]
    ):
        write_bundle(tmp_path / f"b{i}", msgspec.structs.replace(m, index=index), files)
        with pytest.raises(BundleError, match="the manifest says"):
            CatalogIndex(verify_bundle(tmp_path / f"b{i}", None))
    ix = CatalogIndex(built["bundle"])
    with pytest.raises(ConflictError, match="another model"):
        ix.search(np.ones(DIM + 3, np.float32), 5)
    assert ix.search(built["vectors"][0], 0) == []


def test_a_delta_is_not_a_base(built, tmp_path):
    import msgspec

    from artifacts.bundle import write_bundle

    m = built["bundle"].manifest
    fake = msgspec.structs.replace(m, index=msgspec.structs.replace(m.index, base_version=1))
    files = {f.path: built["bundle"].file(f.path) for f in m.files}
    write_bundle(tmp_path / "d", fake, files)
    with pytest.raises(BundleError, match="is a delta, not a full index"):
        CatalogIndex(verify_bundle(tmp_path / "d", None))
