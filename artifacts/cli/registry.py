"""Registry verbs: login, push, pull, ls, show, promote, rollback, history, resolve, audit."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import msgspec
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from artifacts.bundle import verify_bundle
from artifacts.cli import app
from artifacts.cli import login as cli_config
from artifacts.cli.render import console, fmt_bytes, ranking_table, simple_table
from artifacts.client import BundleRef, PullTarget, RegistryClient
from artifacts.errors import InputError, RegistryError
from artifacts.manifest import MANIFEST_FILE
from artifacts.publish import publish_version
from artifacts.signing import TrustedKeys, default_key_path, load_signing_key
from artifacts.targets import NodeCapabilities, Ranking, SelectionPolicy, is_bundle_key

JSON = typer.Option(False, "--json", help="Machine-readable output")


def client() -> RegistryClient:
    cfg = cli_config.require()
    return RegistryClient(cfg.url, cfg.token or None)


def emit_json(obj: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(obj), indent=2))


def byte_progress(total: int, description: str, enabled: bool) -> Progress:
    p = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    p.add_task(description, total=total)
    return p


@app.command("login")
def login(
    url: str = typer.Argument(..., help="Central registry URL, e.g. http://127.0.0.1:8700"),
    token_stdin: bool = typer.Option(
        False, "--token-stdin", help="Read the token from standard input"
    ),
) -> None:
    """Save the registry URL and token (checked against the registry first). The token comes
    from standard input (``--token-stdin``) or ``$SHIPYARD_TOKEN`` — never from the command
    line, where every user of the machine can read it."""
    token = sys.stdin.readline().strip() if token_stdin else os.environ.get("SHIPYARD_TOKEN", "")
    if not token:
        raise InputError(
            "no token: pipe it in with --token-stdin, or set SHIPYARD_TOKEN "
            "(a token on the command line is visible to every user of this machine)"
        )
    with RegistryClient(url, token) as c:
        c.list_models()
    path = cli_config.save(cli_config.CliConfig(url=url.rstrip("/"), token=token))
    console().print(f"logged in to {url}; saved to {path} (mode 0600)")


def find_bundles(out_dir: Path) -> list[Path]:
    if (out_dir / MANIFEST_FILE).exists():
        return [out_dir]
    found = sorted(p.parent for p in out_dir.glob(f"*/{MANIFEST_FILE}"))
    if not found:
        raise InputError(f"no bundles in {out_dir} (expected {out_dir}/<target>/manifest.json)")
    return found


@app.command("push")
def push(
    out_dir: Path = typer.Argument(
        ..., help="A bundle, or a directory of bundles (what `artifact build` wrote)"
    ),
    model: str = typer.Option(..., "--model", help="Model name; every bundle must carry it"),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Private key: stamps the new version into unassigned bundles and re-signs",
    ),
    notes: str = typer.Option("", "--notes"),
    as_json: bool = JSON,
) -> None:
    """Create the next version of MODEL and upload every bundle into it."""
    bundles = [verify_bundle(p, None) for p in find_bundles(out_dir)]
    total = sum(sum(f.size for f in b.manifest.files) for b in bundles)
    key_path = key or default_key_path()
    signing = load_signing_key(key_path) if key_path is not None else None
    with client() as c, byte_progress(total, f"upload {model}", not as_json) as progress:
        task = progress.task_ids[0]
        published = publish_version(
            c,
            bundles,
            model=model,
            key=signing,
            notes=notes,
            progress=lambda n: progress.advance(task, n),
        )
    number = published.version
    results: list[dict] = [
        {
            "target": info.target,
            "created": created,
            "size": info.size,
            "manifest_digest": info.manifest_digest,
        }
        for info, created in published.bundles
    ]
    if as_json:
        emit_json({"model": model, "version": number, "bundles": results})
        return
    rows = [
        [
            r["target"],
            "uploaded" if r["created"] else "already present",
            fmt_bytes(r["size"]),
            r["manifest_digest"][:23] + "…",
        ]
        for r in results
    ]
    console().print(
        simple_table(f"pushed {model} v{number}", ["target", "result", "size", "manifest"], rows)
    )


_REF = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9._-]{0,63})(?:@(?P<version>\d+)|:(?P<channel>[a-z0-9][a-z0-9._-]{0,63}))?$"
)


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    m = _REF.match(ref)
    if not m:
        raise InputError(f"bad reference {ref!r}: use NAME, NAME@VERSION or NAME:CHANNEL")
    return m["name"], int(m["version"]) if m["version"] else None, m["channel"]


def resolve_version(c: RegistryClient, name: str, version: int | None, channel: str | None) -> int:
    if version is not None:
        return version
    if channel is not None:
        ch = c.channel(name, channel)
        if ch.version is None:
            raise InputError(f"channel {name}:{channel} points at no version")
        return ch.version
    versions = c.list_versions(name)
    if not versions:
        raise InputError(f"{name} has no versions")
    return versions[-1].version


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME:CHANNEL"),
    out: Path = typer.Option(..., "--out", help="Directory: bundles land in OUT/<target>"),
    target: list[str] = typer.Option([], "--target", help="Only these targets (repeatable)"),
    trusted_key: list[Path] = typer.Option(
        [], "--trusted-key", help="Trusted publisher .pub (repeatable)"
    ),
    integrity_only: bool = typer.Option(False, "--integrity-only", help="Skip the signature check"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JSON,
) -> None:
    """Download bundles (resumable), verify digests and signature, place them atomically."""
    if not trusted_key and not integrity_only:
        raise InputError("pass --trusted-key PUB (the publisher's key), or --integrity-only")
    trusted = TrustedKeys.from_paths(trusted_key) if trusted_key else None
    name, version, channel = parse_ref(ref)
    pulled = []
    with client() as c:
        number = resolve_version(c, name, version, channel)
        info = c.get_version(name, number)
        chosen = [b for b in info.bundles if not target or b.target in target]
        missing = set(target) - {b.target for b in info.bundles}
        if missing:
            raise InputError(f"{name} v{number} has no bundle for {', '.join(sorted(missing))}")
        total = sum(sum(f["size"] for f in b.manifest["files"]) for b in chosen)
        downloads = out / ".downloads"
        with byte_progress(total, f"pull {name} v{number}", not as_json) as progress:
            task = progress.task_ids[0]
            for b in chosen:
                if not is_bundle_key(b.target):  # a registry answer, before it names a path
                    raise RegistryError(f"the registry names an unknown target {b.target!r}")
                v = c.pull_bundle(
                    c.bundle_document(name, number, b.target),
                    PullTarget(out / b.target, downloads, overwrite),
                    trusted,
                    expect=BundleRef(name, number, b.target),
                    progress=lambda n: progress.advance(task, n),
                )
                pulled.append(
                    {
                        "target": b.target,
                        "path": str(v.path),
                        "signed_by": v.key_id,
                        "digest": v.digest,
                    }
                )
        shutil.rmtree(downloads, ignore_errors=True)
    if as_json:
        emit_json({"model": name, "version": number, "bundles": pulled})
        return
    rows = [[p["target"], p["path"], p["signed_by"] or "not checked"] for p in pulled]
    console().print(
        simple_table(f"pulled {name} v{number} (verified)", ["target", "path", "signed by"], rows)
    )


@app.command("ls")
def ls(
    name: str | None = typer.Argument(None, help="A model: list its versions"), as_json: bool = JSON
) -> None:
    """List models, or one model's versions."""
    with client() as c:
        if name is None:
            models = c.list_models()
            if as_json:
                return emit_json(models)
            rows = [
                [
                    m.name,
                    m.versions,
                    ", ".join(f"{k}→v{v}" for k, v in sorted(m.channels.items())) or "-",
                ]
                for m in models
            ]
            console().print(simple_table("models", ["model", "versions", "channels"], rows))
            return None
        versions = c.list_versions(name)
        channels = {ch.channel: ch.version for ch in c.channels(name)}
    if as_json:
        return emit_json(versions)
    rows = []
    for v in versions:
        chans = ", ".join(k for k, n in channels.items() if n == v.version)
        gate = (
            "all passed"
            if all(b.quality_passed for b in v.bundles)
            else "FAILED: " + ", ".join(b.target for b in v.bundles if not b.quality_passed)
        )
        rows.append(
            [
                f"v{v.version}",
                v.created_at,
                v.created_by,
                ", ".join(b.target for b in v.bundles) or "-",
                gate if v.bundles else "-",
                chans or "-",
            ]
        )
    console().print(
        simple_table(
            f"{name} versions",
            ["version", "created", "by", "targets", "quality gate", "channels"],
            rows,
        )
    )
    return None


@app.command("show")
def show(
    name: str = typer.Argument(...), version: int = typer.Argument(...), as_json: bool = JSON
) -> None:
    """One version: every bundle's target, quality, speed and size."""
    with client() as c:
        info = c.get_version(name, version)
    if as_json:
        return emit_json(info)
    rows = []
    for b in info.bundles:
        q, p = b.manifest["quality"], b.manifest["perf"]
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(q["metrics"].items()))
        rows.append(
            [
                b.target,
                "passed" if b.quality_passed else "FAILED",
                q.get("config", ""),
                metrics,
                f"{p.get('latency_p50_ms') or 0:.2f}",
                f"{p.get('throughput_items_s') or 0:.0f}",
                fmt_bytes(b.size),
                b.key_id,
            ]
        )
    console().print(
        simple_table(
            f"{name} v{version} · created {info.created_at} by {info.created_by} · channels: {', '.join(info.channels) or '-'}",
            ["target", "gate", "config", "metrics", "p50 ms", "items/s", "size", "signed by"],
            rows,
        )
    )
    return None


def _channel_table(ch) -> object:
    rows = [
        [
            e.seq,
            e.at,
            e.action,
            f"v{e.version}",
            f"v{e.previous}" if e.previous else "-",
            e.actor,
            "yes" if e.forced else "",
        ]
        for e in ch.history
    ]
    return simple_table(
        f"{ch.model}:{ch.channel} → v{ch.version}",
        ["#", "at", "action", "version", "from", "by", "forced"],
        rows,
    )


@app.command("promote")
def promote(
    name: str = typer.Argument(...),
    version: int = typer.Argument(...),
    channel: str = typer.Option(..., "--channel"),
    force: bool = typer.Option(
        False, "--force", help="Admin only: promote past a failed quality gate"
    ),
    as_json: bool = JSON,
) -> None:
    """Point a channel at a version (refused if a quality gate failed, unless --force by an admin)."""
    with client() as c:
        ch = c.promote(name, channel, version, force=force)
    emit_json(ch) if as_json else console().print(_channel_table(ch))


@app.command("rollback")
def rollback(
    name: str = typer.Argument(...),
    channel: str = typer.Option(..., "--channel"),
    as_json: bool = JSON,
) -> None:
    """Return a channel to the version before its current one."""
    with client() as c:
        ch = c.rollback(name, channel)
    emit_json(ch) if as_json else console().print(_channel_table(ch))


@app.command("history")
def history(
    name: str = typer.Argument(...),
    channel: str = typer.Option(..., "--channel"),
    as_json: bool = JSON,
) -> None:
    """A channel's promotions and rollbacks."""
    with client() as c:
        ch = c.channel(name, channel)
    emit_json(ch) if as_json else console().print(_channel_table(ch))


@app.command("resolve")
def resolve(
    name: str = typer.Argument(...),
    channel: str | None = typer.Option(None, "--channel"),
    version: int | None = typer.Option(None, "--version"),
    capabilities: Path | None = typer.Option(
        None, "--capabilities", help="NodeCapabilities JSON (from `edge-runtime probe --json`)"
    ),
    this_node: bool = typer.Option(False, "--this-node", help="Probe this machine"),
    deny: list[str] = typer.Option([], "--deny"),
    allow: list[str] = typer.Option([], "--allow"),
    prefer: list[str] = typer.Option([], "--prefer"),
    require_gpu: bool = typer.Option(False, "--require-gpu"),
    as_json: bool = JSON,
) -> None:
    """Show what a node would get from a channel, and why every other bundle is excluded."""
    if (capabilities is None) == (not this_node):
        raise InputError("pass exactly one of --capabilities FILE or --this-node")
    if capabilities is not None:
        try:
            caps = msgspec.json.decode(capabilities.read_bytes(), type=NodeCapabilities)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InputError(f"cannot read capabilities from {capabilities}: {exc}") from exc
    else:
        from artifacts.probe import probe_node

        caps = probe_node()
    policy = SelectionPolicy(allow=allow, deny=deny, prefer=prefer, require_gpu=require_gpu)
    with client() as c:
        res = c.resolve(name, caps, channel=channel, version=version, policy=policy)
    if as_json:
        return emit_json(
            {
                "model": res.model,
                "channel": res.channel,
                "version": res.version,
                "eligible": [e.candidate for e in res.eligible],
                "excluded": res.excluded,
            }
        )
    ranking = Ranking(eligible=[e.candidate for e in res.eligible], excluded=list(res.excluded))
    where = f":{channel}" if channel else ""
    console().print(
        ranking_table(
            ranking,
            title=f"{name}{where} → v{res.version} on {caps.hostname or 'node'} ({caps.arch})",
        )
    )
    return None


@app.command("audit")
def audit(limit: int = typer.Option(50, "--limit"), as_json: bool = JSON) -> None:
    """The registry's audit log (admin token)."""
    with client() as c:
        events = c.audit(limit)
    if as_json:
        return emit_json(events)
    rows = [[e.id, e.at, e.actor, e.action, e.subject, e.outcome, e.detail[:80]] for e in events]
    console().print(
        simple_table(
            "audit log", ["#", "at", "actor", "action", "subject", "outcome", "detail"], rows
        )
    )
    return None


@app.command("fleet")
def fleet(as_json: bool = JSON) -> None:
    """Edge nodes' last heartbeats: what each serves, with which backend, how well."""
    with client() as c:
        nodes = c.fleet()
    if as_json:
        return emit_json(nodes)
    rows: list[list[object]] = []
    for n in nodes:
        if not n.report.models:  # assigned by an admin and not reported yet, or serving nothing
            waiting = n.report.capabilities is None and not n.report.arch
            state = "assigned, not reported yet" if waiting else "no models"
            rows.append([n.node, n.reporter or "-", f"{n.age_s:.0f} s ago", "-", state])
            rows[-1] += ["-"] * 5
        for m in n.report.models:
            rows.append(
                [
                    n.node,
                    n.reporter or "-",
                    f"{n.age_s:.0f} s ago",
                    f"{m.model}:{m.channel}",
                    m.state,
                    f"v{m.version}" if m.version else "-",
                    m.target or "-",
                    m.fallbacks,
                    m.errors,
                    f"{m.p50_ms:.2f}" if m.p50_ms is not None else "-",
                ]
            )
    console().print(
        simple_table(
            "fleet",
            [
                "node",
                "token",
                "seen",
                "model",
                "state",
                "version",
                "backend",
                "fallbacks",
                "errors",
                "batch p50 ms",
            ],
            rows,
        )
    )
    return None


@app.command("forget-node")
def forget_node(node: str = typer.Argument(...)) -> None:
    """Remove a node from the fleet (admin): a stale one, or one to hand to another token."""
    with client() as c:
        c.delete_node(node)
    console().print(f"node {node} removed from the fleet")


@app.command("fleet-handover")
def fleet_handover(
    nodes: list[str] = typer.Argument(None, help="Only these nodes (default: all it reports)"),
    from_token: int | None = typer.Option(
        None, "--from", help="The token id reporting them now (omit: assign unowned NODEs)"
    ),
    to_token: int = typer.Option(..., "--to", help="The (live) token id to report them"),
) -> None:
    """Move nodes to another token (admin): after rotating a node's credential, the new token
    reports them; the old one is refused from then on. Without --from, assign the named nodes
    that no token holds yet (needed under `central serve --fleet-claims assigned`)."""
    if from_token is None and not nodes:
        raise typer.BadParameter("name the nodes to assign, or --from the token to hand over")
    with client() as c:
        moved = c.fleet_handover(from_token, to_token, nodes or None)
    console().print(f"{len(moved)} node(s) now reported by token #{to_token}: {', '.join(moved)}")


@app.command("halt")
def halt(
    name: str = typer.Argument(...),
    channel: str = typer.Option(..., "--channel"),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Freeze a channel's rollout: promotions are refused until `artifact resume`."""
    with client() as c:
        ch = c.halt(name, channel, reason)
    console().print(f"{name}:{channel} halted at v{ch.version}")


@app.command("resume")
def resume(name: str = typer.Argument(...), channel: str = typer.Option(..., "--channel")) -> None:
    """Allow promotions to a halted channel again."""
    with client() as c:
        ch = c.resume(name, channel)
    console().print(f"{name}:{channel} resumed (at v{ch.version})")
