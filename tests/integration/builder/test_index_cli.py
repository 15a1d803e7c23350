"""`artifact index build / update` as a user runs them (real subprocesses, a real tiny model
bundle, a real usearch index): the happy path, the version lock, and bad catalogs by line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from artifacts.bundle import restamp_bundle, verify_bundle
from artifacts.signing import TrustedKeys, load_signing_key


def artifact(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from artifacts.cli import main; sys.exit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def model_v1(tiny_builds, publisher_keys, tmp_path_factory):
    """The tiny embedding model's onnx-int8 bundle as registered version 1."""
    out, _ = tiny_builds["embedding"]
    dest = tmp_path_factory.mktemp("model") / "onnx-int8"
    restamp_bundle(out / "onnx-int8", dest, version=1, key=load_signing_key(publisher_keys[0]))
    return dest


def write(path, records) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def test_build_then_update(model_v1, publisher_keys, tmp_path):
    priv, pub = (str(p) for p in publisher_keys)
    records = [
        {"id": f"sku-{i}", "text": f"{c} number {i}", "fields": {"price": float(i)}}
        for i, c in enumerate(["red shoe", "blue lamp", "green cup", "steel pan"] * 40)
    ]
    cat = write(tmp_path / "catalog.jsonl", records)
    common = ["--trusted-key", pub, "--key", priv]
    r = artifact(
        "index",
        "build",
        "--catalog",
        cat,
        "--name",
        "tiny-catalog",
        "--out",
        str(tmp_path / "ix"),
        "--model-bundle",
        str(model_v1),
        "--json",
        *common,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["model"]["task"] == "index" and m["index"]["model"]["version"] == 1
    assert m["index"]["items"] == 160 and m["quality"]["passed"]
    bundle = verify_bundle(tmp_path / "ix", TrustedKeys.from_paths([publisher_keys[1]]))
    assert bundle.manifest.index.model.manifest_digest == verify_bundle(model_v1, None).digest
    # a delta needs a registered base: stamp v1 as `artifact push` would
    restamp_bundle(tmp_path / "ix", tmp_path / "ix1", version=1, key=load_signing_key(priv))
    changes = write(
        tmp_path / "changes.jsonl",
        [{"id": "sku-1", "delete": True}, {"id": "new", "text": "brass lamp"}],
    )
    r = artifact(
        "index",
        "update",
        "--base",
        str(tmp_path / "ix1"),
        "--changes",
        changes,
        "--out",
        str(tmp_path / "delta"),
        "--model-bundle",
        str(model_v1),
        *common,
    )
    assert r.returncode == 0, r.stderr
    assert "delta over v1" in r.stdout
    d = verify_bundle(tmp_path / "delta", None).manifest.index
    assert (d.base_version, d.upserts, d.deletes) == (1, 1, 1)


def test_many_upserts_each_find_themselves(model_v1, publisher_keys, tmp_path):
    """usearch lists vectors in its internal order: deltas must pair each vector with its item
    (found with 60 upserts; 2 happened to work), through --previous too."""
    from builder.index import embed_texts
    from edge_runtime.search.catalog_index import CatalogIndex

    priv, pub = (str(p) for p in publisher_keys)
    key = load_signing_key(priv)
    trusted = TrustedKeys.from_paths([publisher_keys[1]])
    base_records = [
        {"id": f"b{i}", "text": f"base product {i}", "fields": {"price": float(i), "brand": "acme"}}
        for i in range(50)
    ]
    cat = write(tmp_path / "catalog.jsonl", base_records)
    common = ["--model-bundle", str(model_v1), "--trusted-key", pub, "--key", priv]
    r = artifact(
        "index", "build", "--catalog", cat, "--name", "c", "--out", str(tmp_path / "ix"), *common
    )
    assert r.returncode == 0, r.stderr
    restamp_bundle(tmp_path / "ix", tmp_path / "ix1", version=1, key=key)
    words = ["kettle", "violin", "tent", "drill", "scarf", "lamp", "bike", "mug", "sofa", "kite"]
    first = [
        {"id": f"n{i}", "text": f"{words[i % 10]} {words[(i * 7) % 10]} model {i}"}
        for i in range(60)
    ]
    ch1 = write(tmp_path / "ch1.jsonl", first)
    r = artifact(
        "index",
        "update",
        "--base",
        str(tmp_path / "ix1"),
        "--changes",
        ch1,
        "--out",
        str(tmp_path / "d1"),
        *common,
    )
    assert r.returncode == 0, r.stderr
    restamp_bundle(tmp_path / "d1", tmp_path / "d1s", version=2, key=key)
    # the second delta carries the first's 60 upserts; a price-only change keeps the brand
    ch2 = write(
        tmp_path / "ch2.jsonl",
        [
            {"id": "b3", "text": "base product 3", "fields": {"price": 0.5}},
            {"id": "n5", "delete": True},
        ],
    )
    r = artifact(
        "index",
        "update",
        "--base",
        str(tmp_path / "ix1"),
        "--previous",
        str(tmp_path / "d1s"),
        "--changes",
        ch2,
        "--out",
        str(tmp_path / "d2"),
        *common,
    )
    assert r.returncode == 0, r.stderr
    restamp_bundle(tmp_path / "d2", tmp_path / "d2s", version=3, key=key)
    model = verify_bundle(model_v1, trusted)
    for delta, upserts in (("d1s", first), ("d2s", [u for u in first if u["id"] != "n5"])):
        ix = CatalogIndex(
            verify_bundle(tmp_path / "ix1", trusted), verify_bundle(tmp_path / delta, trusted)
        )
        vectors = embed_texts(model, [u["text"] for u in upserts])
        for u, v in zip(upserts, vectors, strict=True):
            assert ix.search(v, 1)[0].id == u["id"], (delta, u)
    ix = CatalogIndex(
        verify_bundle(tmp_path / "ix1", trusted), verify_bundle(tmp_path / "d2s", trusted)
    )
    hit = ix.search(embed_texts(model, ["base product 3"])[0], 1, {"price": {"lt": 1}})[0]
    assert hit.id == "b3" and hit.fields == {"price": 0.5, "brand": "acme"}
    assert "n5" not in {h.id for h in ix.search(embed_texts(model, [first[5]["text"]])[0], 5)}
    assert ix.items == 50 + 59


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"id": "a", "text": "x"}, "{oops"], "catalog.jsonl line 2: not valid JSON"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "line 2: duplicate id 'a'"),
        ([{"id": "a"}], "line 1: text is missing"),
        ([], "holds no records"),
    ],
)
def test_bad_catalogs_exit_1_with_the_line(model_v1, publisher_keys, tmp_path, lines, message):
    cat = write(tmp_path / "catalog.jsonl", lines)
    r = artifact(
        "index",
        "build",
        "--catalog",
        cat,
        "--name",
        "c",
        "--out",
        str(tmp_path / "ix"),
        "--model-bundle",
        str(model_v1),
        "--trusted-key",
        str(publisher_keys[1]),
    )
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert message in " ".join(r.stderr.split())
    assert not (tmp_path / "ix").exists()


def test_unregistered_model_and_untrusted_model_are_refused(tiny_builds, publisher_keys, tmp_path):
    out, _ = tiny_builds["embedding"]
    cat = write(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}])
    base = ["index", "build", "--catalog", cat, "--name", "c", "--out", str(tmp_path / "ix")]
    r = artifact(
        *base, "--model-bundle", str(out / "onnx-int8"), "--trusted-key", str(publisher_keys[1])
    )
    assert r.returncode == 1 and "push it first" in " ".join(r.stderr.split())
    r = artifact(*base, "--model-bundle", str(out / "onnx-int8"))
    assert r.returncode == 1 and "--trusted-key" in r.stderr
