"""Local bundle verbs: ``keys generate``, ``inspect``, ``verify``."""

from __future__ import annotations

from pathlib import Path

import msgspec
import typer

from artifacts.bundle import read_manifest, read_provenance, verify_bundle
from artifacts.cli import app, keys_app
from artifacts.cli.render import console, manifest_table, provenance_table
from artifacts.errors import InputError
from artifacts.manifest import to_builtins
from artifacts.signing import TrustedKeys, generate_keypair


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(..., "--out", help="Directory for publisher.key and publisher.pub"),
    overwrite: bool = typer.Option(False, help="Replace an existing key pair"),
) -> None:
    """Generate an ed25519 publisher key pair."""
    priv, pub, kid = generate_keypair(out, overwrite=overwrite)
    out_console = console()
    out_console.print(f"key id      {kid}")
    out_console.print(f"private key {priv}  (keep it secret; mode 0600)")
    out_console.print(f"public key  {pub}   (give it to registries and edge nodes to trust)")


@app.command("inspect")
def inspect_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
) -> None:
    """Show a bundle's manifest (model, target, requirements, quality, perf, files) and its
    provenance: who built it from what (SLSA, in-toto), as the builder signed it."""
    manifest = read_manifest(bundle)
    provenance = read_provenance(bundle)
    if as_json:
        doc = {**to_builtins(manifest), "provenance": provenance}
        typer.echo(msgspec.json.format(msgspec.json.encode(doc), indent=2))
        return
    console().print(manifest_table(manifest))
    if provenance is not None:
        console().print(provenance_table(provenance))


@app.command("verify")
def verify_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory"),
    trusted_key: list[Path] = typer.Option(
        [], "--trusted-key", help="Trusted publisher .pub file or directory (repeatable)"
    ),
    integrity_only: bool = typer.Option(
        False, "--integrity-only", help="Check files only; do not require a trusted signature"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Verify every file digest, the file list, and the signature. Exit 0 only if valid."""
    if not trusted_key and not integrity_only:
        raise InputError(
            "no trusted keys: pass --trusted-key PUB (repeatable), or --integrity-only to "
            "check the files without the signature"
        )
    trusted = TrustedKeys.from_paths(trusted_key) if trusted_key else None
    verified = verify_bundle(bundle, trusted)
    m = verified.manifest
    if as_json:
        typer.echo(
            msgspec.json.encode(
                {
                    "valid": True,
                    "digest": verified.digest,
                    "signed_by": verified.key_id,
                    "model": m.model.name,
                    "version": m.model.version,
                    "target": m.bundle_key(),
                    "files": len(m.files),
                }
            ).decode()
        )
        return
    signer = (
        f"signed by trusted key {verified.key_id}" if verified.key_id else "signature NOT checked"
    )
    console().print(
        f"[green]valid[/green] {m.model.name} v{m.model.version} {m.bundle_key()}: "
        f"{len(m.files)} files match their digests; {signer}; bundle {verified.digest[:23]}…",
        highlight=False,
    )


@app.command("demo")
def demo_cmd(
    home: Path = typer.Option(Path(".demo"), "--home", help="Demo state (reused by a re-run)"),
    fresh: bool = typer.Option(False, "--fresh", help="Start from an empty demo home"),
    central_port: int = typer.Option(8700, "--central-port"),
    edge_port: int = typer.Option(8080, "--edge-port"),
) -> None:
    """Run the whole product end to end on the bundled model (what `make demo` runs)."""
    from artifacts.cli.demo import Demo, DemoConfig, DemoError, clean

    if fresh:
        clean(home)
    try:
        Demo(
            DemoConfig(home=str(home), central_port=central_port, edge_port=edge_port), console()
        ).run()
    except DemoError as exc:
        console(stderr=True).print(f"[red]demo failed[/red] — {exc}")
        raise typer.Exit(1) from exc
