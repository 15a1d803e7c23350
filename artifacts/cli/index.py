"""``artifact index build`` / ``artifact index update``: catalog index bundles.

The model bundle an index is embedded with comes from the registry (``--model NAME@V`` or
``NAME:CHANNEL`` with ``--target``), verified against ``--trusted-key``, or from a local bundle
directory (``--model-bundle``). The index bundle is written unassigned (v0), like ``artifact
build``; ``artifact push OUT --model INDEX-NAME`` registers it as the index's next version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from artifacts.bundle import VerifiedBundle, verify_bundle
from artifacts.cli import app
from artifacts.cli.registry import JSON, client, emit_json, parse_ref, resolve_version
from artifacts.cli.render import console, simple_table
from artifacts.client import BundleRef, PullTarget
from artifacts.errors import InputError
from artifacts.manifest import Manifest, to_builtins
from artifacts.signing import TrustedKeys, default_key_path, load_signing_key

index_app = typer.Typer(help="Catalog indexes for /v1/search.", no_args_is_help=True)
app.add_typer(index_app, name="index")

TRUSTED = typer.Option(
    [], "--trusted-key", help="Trusted publisher .pub for the model bundle (repeatable)"
)


def _trusted(paths: list[Path]) -> TrustedKeys:
    if not paths:
        raise InputError("pass --trusted-key PUB: the model bundle is verified before it is used")
    return TrustedKeys.from_paths(paths)


def model_bundle(
    ref: str | None, target: str, local: Path | None, trusted: TrustedKeys, tmp: Path
) -> VerifiedBundle:
    """The embedding model bundle, verified: pulled from the registry or read from disk."""
    if (ref is None) == (local is None):
        raise InputError("pass exactly one of --model NAME@VERSION|NAME:CHANNEL or --model-bundle")
    if local is not None:
        return verify_bundle(local, trusted)
    assert ref is not None
    name, version, channel = parse_ref(ref)
    with client() as c:
        number = resolve_version(c, name, version, channel)
        return c.pull_bundle(
            c.bundle_document(name, number, target),
            PullTarget(tmp / target, tmp / ".downloads"),
            trusted,
            expect=BundleRef(name, number, target),
        )


def _progress(enabled: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _summary(m: Manifest, out: Path) -> None:
    spec = m.index
    assert spec is not None
    rows = [
        [
            "index",
            f"{m.model.name} ({'delta over v' + str(spec.base_version) if spec.base_version else 'full'})",
        ],
        ["embedded with", f"{spec.model.name} v{spec.model.version} {spec.model.target}"],
        ["items", f"{spec.items:,}" + (f" (+ {spec.deletes} deletes)" if spec.deletes else "")],
        ["vectors", f"{spec.dim}-d {spec.dtype}, {spec.library}"],
        [
            "HNSW",
            f"M={spec.connectivity} ef_add={spec.expansion_add} ef_search={spec.expansion_search}",
        ],
        ["recall@10", f"{spec.recall_at_10} vs exact FP32 search (gate {m.quality.thresholds})"],
        ["gate", "passed" if m.quality.passed else "FAILED"],
        ["build", f"embed {spec.embed_s} s, index {spec.build_s} s"],
        ["bundle", str(out)],
    ]
    console().print(simple_table("catalog index", ["", ""], rows))


@index_app.command("build")
def build_cmd(
    catalog: Path = typer.Option(..., "--catalog", help="JSONL: {id, text, fields?} per line"),
    name: str = typer.Option(..., "--name", help="Index name (its registry name)"),
    out: Path = typer.Option(..., "--out", help="Where to write the index bundle"),
    model: str | None = typer.Option(None, "--model", help="NAME@VERSION or NAME:CHANNEL"),
    target: str = typer.Option(
        "onnx-int8", "--target", help="Which bundle of the model embeds the catalog"
    ),
    model_bundle_dir: Path | None = typer.Option(
        None, "--model-bundle", help="A local model bundle instead of --model"
    ),
    trusted_key: list[Path] = TRUSTED,
    key: Path | None = typer.Option(None, "--key", help="Signing key (default: SHIPYARD_KEY)"),
    queries: Path | None = typer.Option(
        None, "--queries", help="Recall is measured with these queries (one per line)"
    ),
    threads: int = typer.Option(0, "--threads", help="0: every core"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JSON,
) -> None:
    """Embed a catalog with one registered model bundle, build its HNSW index, measure
    recall@10 against exact search, sign. Exit 1 when recall misses the gate."""
    from artifacts.names import check_name
    from builder.index import IndexBuild, IndexParams, build_index

    check_name(name, "index name")
    trusted = _trusted(trusted_key)
    key_path = key or default_key_path()
    signing = load_signing_key(key_path) if key_path is not None else None
    query_list = None
    if queries is not None:
        query_list = [q for q in queries.read_text().splitlines() if q.strip()]
        if not query_list:
            raise InputError(f"{queries} holds no queries")
    with tempfile.TemporaryDirectory(prefix="shipyard-model-") as tmp:
        mb = model_bundle(model, target, model_bundle_dir, trusted, Path(tmp))
        with _progress(not as_json) as progress:
            task = progress.add_task(f"embed {catalog.name}", total=None)
            manifest = build_index(
                IndexBuild(
                    model=mb,
                    catalog=catalog,
                    name=name,
                    out=out,
                    key=signing,
                    params=IndexParams(threads=threads),
                    queries=query_list,
                    overwrite=overwrite,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
            )
    if as_json:
        emit_json(to_builtins(manifest))
    else:
        _summary(manifest, out)
    if not manifest.quality.passed:
        raise typer.Exit(1)


@index_app.command("update")
def update_cmd(
    base: Path = typer.Option(..., "--base", help="The registered full index bundle"),
    changes: Path = typer.Option(
        ..., "--changes", help='JSONL: products to add or replace; {"id": ..., "delete": true}'
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the delta bundle"),
    previous: Path | None = typer.Option(
        None, "--previous", help="The newest delta of this base (its changes are carried over)"
    ),
    model: str | None = typer.Option(None, "--model", help="NAME@VERSION (the base's model)"),
    target: str = typer.Option("onnx-int8", "--target"),
    model_bundle_dir: Path | None = typer.Option(None, "--model-bundle"),
    trusted_key: list[Path] = TRUSTED,
    key: Path | None = typer.Option(None, "--key"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JSON,
) -> None:
    """A cumulative delta over a full index: price/stock/text changes without a rebuild.
    Edge nodes apply it to the index they hold, without reloading it."""
    from builder.index import DeltaBuild, build_delta

    trusted = _trusted(trusted_key)
    key_path = key or default_key_path()
    signing = load_signing_key(key_path) if key_path is not None else None
    base_bundle = verify_bundle(base, trusted)
    prev = verify_bundle(previous, trusted) if previous is not None else None
    spec = base_bundle.manifest.index
    if model is None and model_bundle_dir is None and spec is not None:
        model, target = f"{spec.model.name}@{spec.model.version}", spec.model.target
    with tempfile.TemporaryDirectory(prefix="shipyard-model-") as tmp:
        mb = model_bundle(model, target, model_bundle_dir, trusted, Path(tmp))
        manifest = build_delta(
            DeltaBuild(
                base=base_bundle,
                model=mb,
                changes=changes,
                out=out,
                previous=prev,
                key=signing,
                overwrite=overwrite,
            )
        )
    if as_json:
        emit_json(to_builtins(manifest))
    else:
        _summary(manifest, out)
