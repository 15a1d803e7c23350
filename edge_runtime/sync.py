"""Resolve → download → verify → place in the local cache; start from the cache when the
registry is away.

Cache layout (``[cache] dir``)::

    models/<name>/v<version>/<target>/   verified bundles, placed atomically
    models/<name>/state.json             last known good version (atomic writes)
    downloads/<name>/                    resumable partial blobs (one dir per model: syncs run in parallel)

Nothing enters ``models/`` without passing digest + signature verification, and every bundle
is verified again when it is loaded (the cache could have been tampered with since).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts import atomic
from artifacts.bundle import read_manifest, verify_bundle
from artifacts.client import (
    DISK_FULL,
    BundleRef,
    PullTarget,
    RegistryClient,
    SignedManifest,
    decode_b64,
)
from artifacts.digests import sha256_bytes
from artifacts.errors import DiskFullError, RegistryError, ShipyardError, UnsafePathError
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.signing import TrustedKeys
from artifacts.targets import (
    Exclusion,
    NodeCapabilities,
    Ranking,
    SelectionPolicy,
    is_bundle_key,
    rank_bundles,
)
from artifacts.wire import ResolveResponse
from edge_runtime.channel_metadata import ChannelMetadata, Pointer

log = logging.getLogger("shipyard.edge.sync")
CARRIED_FILE = "carried.json"  # the version's bundle keys, as its signed channel metadata lists
VERSION_DIR = re.compile(r"v[1-9][0-9]{0,8}")


class ModelState(msgspec.Struct, kw_only=True):
    good_version: int | None = None  # last version that served (selected + smoke-checked)
    channel: str = ""
    updated_at: float = 0.0


@dataclass
class Resolved:
    """One model version as this node sees it: its ranking and which bundles are on disk."""

    version: int
    ranking: Ranking
    bundles: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # target -> why it is not on disk
    source: str = "registry"  # registry | cache


class BundleCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        self.downloads = self.root / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.swept = self._sweep_crash_leftovers()

    def _sweep_crash_leftovers(self) -> list[Path]:
        """Half-placed bundles a crash left behind (hidden ``.partial``/``.old`` dirs): only at
        start, when no placement of this process can be in progress."""
        removed = []
        for model in (self.root / "models").iterdir():
            if model.is_dir() and not model.is_symlink():
                removed += atomic.remove_stale_partials(model)
                for version in model.iterdir():
                    if version.is_dir() and not version.is_symlink():
                        removed += atomic.remove_stale_partials(version)
        if removed:
            log.warning(
                "removed %d leftovers of an interrupted placement: %s",
                len(removed),
                ", ".join(str(p.relative_to(self.root)) for p in removed),
            )
        return removed

    def contained(self, path: Path) -> Path:
        """``path`` if it resolves inside the cache root (every path built from a registry
        answer goes through here), else an UnsafePathError."""
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise UnsafePathError(f"{path} would leave the cache directory {root}")
        return path

    def model_dir(self, name: str) -> Path:
        return self.contained(self.root / "models" / check_name(name, "model name"))

    def version_dir(self, name: str, version: int) -> Path:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UnsafePathError(f"version {version!r} is not a positive integer")
        return self.contained(self.model_dir(name) / f"v{version}")

    def bundle_dir(self, name: str, version: int, target: str) -> Path:
        if not is_bundle_key(target):  # a known target id [+ a well-formed variant]: no path tricks
            raise UnsafePathError(f"target {target!r} is not a known target")
        return self.contained(self.version_dir(name, version) / target)

    def versions(self, name: str) -> list[int]:
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        return sorted(
            int(p.name[1:])
            for p in d.iterdir()
            if p.is_dir() and not p.is_symlink() and VERSION_DIR.fullmatch(p.name)
        )

    def bundles(self, name: str, version: int) -> dict[str, Path]:
        d = self.version_dir(name, version)
        atomic.remove_stale_partials(d)
        if not d.is_dir():
            return {}
        return {
            p.name: p
            for p in sorted(d.iterdir())
            if p.is_dir() and not p.is_symlink() and is_bundle_key(p.name)
        }

    def clear_downloads(self, name: str) -> int:
        """Remove a model's partial and leftover downloads (bytes nothing will resume)."""
        d = self.contained(self.downloads / check_name(name, "model name"))
        removed = 0
        if d.is_dir() and not d.is_symlink():
            for f in d.iterdir():
                if f.is_file() or f.is_symlink():
                    f.unlink(missing_ok=True)
                    removed += 1
        return removed

    def state(self, name: str) -> ModelState:
        path = self.model_dir(name) / "state.json"
        try:
            return msgspec.json.decode(path.read_bytes(), type=ModelState)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return ModelState()

    def save_state(self, name: str, state: ModelState) -> None:
        atomic.write_bytes(self.model_dir(name) / "state.json", msgspec.json.encode(state))

    def gc(self, name: str, keep: int, protect: set[int]) -> list[int]:
        """Delete versions beyond the newest ``keep`` (never one in ``protect``)."""
        versions = self.versions(name)
        doomed = [v for v in versions[:-keep] if v not in protect] if keep > 0 else []
        for v in doomed:
            shutil.rmtree(self.version_dir(name, v), ignore_errors=True)
        return doomed


class Syncer:
    def __init__(
        self,
        client: RegistryClient,
        cache: BundleCache,
        caps: NodeCapabilities,
        policy: SelectionPolicy,
        trusted: TrustedKeys,
        metadata: ChannelMetadata | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.caps = caps
        self.policy = policy
        self.trusted = trusted
        self.metadata = metadata  # TUF: what each channel points at, signed

    def _resolve(self, name: str, channel: str, version: int | None):
        """The registry's answer for the channel (or ``version``) and the signed pointer, if
        TUF metadata pins the channel."""
        pinned = None
        if version is None and self.metadata is not None:
            pinned = self.metadata.pointer(name, channel)
        if pinned is not None:  # resolve the version the signed metadata names, nothing else
            res = self.client.resolve(name, self.caps, version=pinned.version, policy=self.policy)
        elif version is not None:
            res = self.client.resolve(name, self.caps, version=version, policy=self.policy)
        else:
            res = self.client.resolve(name, self.caps, channel=channel, policy=self.policy)
        if res.model != name:
            raise RegistryError(f"asked to resolve {name}, the registry answered for {res.model!r}")
        if version is not None and res.version != version:
            raise RegistryError(
                f"asked for {name} v{version}, the registry answered v{res.version}"
            )
        if pinned is not None and res.version != pinned.version:
            raise RegistryError(
                f"the signed metadata pins {name}:{channel} to v{pinned.version}, "
                f"the registry answered v{res.version}"
            )
        return res, pinned

    def from_registry(self, name: str, channel: str, *, version: int | None = None) -> Resolved:
        """Ask the registry what this node should run, and make sure it is on disk, verified.

        ``version``: that version rather than the channel's (the base of a catalog index
        delta); its bundles are verified against the trusted keys like any other."""
        res, pinned = self._resolve(name, channel, version)
        vdir = self.cache.version_dir(name, res.version)  # a hostile version never names a path
        carried = self._carried(vdir, pinned)
        ranking = self._rank_offered(res, carried)
        wanted = {c.target for c in ranking.eligible}
        resolved = Resolved(version=res.version, ranking=ranking)
        for e in res.eligible:
            target = e.candidate.target
            if target not in wanted:
                continue  # refused by this node's own ranking: never downloaded
            dest = self.cache.bundle_dir(name, res.version, target)
            manifest = decode_b64(e.manifest, "manifest")
            if pinned is not None and sha256_bytes(manifest) != pinned.bundles.get(target):
                resolved.errors[target] = (
                    f"the registry's {target} bundle is not the one the signed metadata pins "
                    "(mix-and-match refused)"
                )
                log.warning("%s v%s %s: %s", name, res.version, target, resolved.errors[target])
                continue
            if dest.exists():
                try:
                    cached = verify_bundle(dest, self.trusted)
                    if cached.digest != sha256_bytes(manifest):  # validly signed, but not it
                        raise RegistryError(
                            f"the cached {target} bundle is not the one the registry names"
                        )
                    resolved.bundles[target] = dest
                    continue
                except ShipyardError as exc:
                    log.warning(
                        "%s v%s %s in the cache fails verification (%s); downloading again",
                        name,
                        res.version,
                        target,
                        exc,
                    )
                    shutil.rmtree(dest, ignore_errors=True)
            try:
                t0 = time.monotonic()
                self.client.pull_bundle(
                    SignedManifest(manifest, e.signature),
                    PullTarget(dest, self.cache.downloads / name),
                    self.trusted,
                    expect=BundleRef(name, res.version, target),
                )
                log.info(
                    "%s v%s %s: downloaded and verified in %.1f s",
                    name,
                    res.version,
                    target,
                    time.monotonic() - t0,
                )
                resolved.bundles[target] = dest
            except (ShipyardError, OSError) as exc:  # OSError: the disk, not the registry
                resolved.errors[target] = (
                    str(exc) if isinstance(exc, ShipyardError) else f"{type(exc).__name__}: {exc}"
                )
                log.warning("%s v%s %s: %s", name, res.version, target, resolved.errors[target])
                if isinstance(exc, DiskFullError) or getattr(exc, "errno", None) in DISK_FULL:
                    self.cache.clear_downloads(name)  # give back everything a resume would use
        if not resolved.errors:  # every bundle is in place: no partial download is needed
            self.cache.clear_downloads(name)
        return resolved

    def _carried(self, vdir: Path, pinned: Pointer | None) -> tuple[str, ...]:
        """Every bundle key the version carries, as far as this node can prove it: the signed
        channel metadata's list (recorded beside the version, for serving from the cache), or
        nothing known — then a variant is served only when the policy names it (a registry
        answer could leave the full model's bundles out)."""
        if pinned is None:
            return ()
        keys = tuple(sorted(pinned.bundles))
        try:
            vdir.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(vdir / CARRIED_FILE, msgspec.json.encode(list(keys)))
        except OSError as exc:
            log.warning("cannot record the bundles of %s: %s", vdir, exc)
        return keys

    def _rank_offered(self, res: ResolveResponse, carried: tuple[str, ...]) -> Ranking:
        """The registry's ranking is a hint: what it offers is ranked again here by the node's
        own capabilities and policy *before* anything is downloaded, so a hostile answer cannot
        make the node fetch or serve a variant or a target its policy refuses. (The manifests
        ranked here are the ones each download is then verified against, signature included.)"""
        manifests, excluded = [], list(res.excluded)
        for e in res.eligible:
            if not is_bundle_key(e.candidate.target):  # before it could name a path
                reason = f"target {e.candidate.target!r} is not a known target"
                excluded.append(Exclusion(target=e.candidate.target, reason=reason))
                continue
            try:
                m = decode(decode_b64(e.manifest, "manifest"))
                key = m.bundle_key()
            except ShipyardError as exc:
                excluded.append(Exclusion(target=e.candidate.target, reason=str(exc)))
                continue
            if key != e.candidate.target:
                reason = f"the registry offered a {key} manifest as {e.candidate.target!r}"
                excluded.append(Exclusion(target=e.candidate.target, reason=reason))
                continue
            manifests.append(m)
        local = rank_bundles(self.caps, manifests, self.policy, version_keys=carried)
        return Ranking(eligible=local.eligible, excluded=[*excluded, *local.excluded])

    def cached_versions(self, name: str, exclude: frozenset[int] = frozenset()) -> list[int]:
        """Cached versions in the order to fall back on: the last known good first, then the
        newest down."""
        state = self.cache.state(name)
        versions = [v for v in reversed(self.cache.versions(name)) if v not in exclude]
        if state.good_version in versions:
            versions.remove(state.good_version)
            versions.insert(0, state.good_version)
        return versions

    def from_cache(self, name: str, version: int | None = None) -> Resolved | None:
        """``version`` (default: the last known good, else the newest cached) from the cache,
        ranked locally by the same pure function the registry uses."""
        if version is None:
            order = self.cached_versions(name)
            if not order:
                return None
            version = order[0]
        bundles = self.cache.bundles(name, version)
        manifests, readable = [], {}
        for target, path in bundles.items():
            try:
                manifests.append(read_manifest(path))
                readable[target] = path
            except ShipyardError as exc:
                log.warning("cached %s v%s %s unreadable: %s", name, version, target, exc)
        carried = self._carried_cached(self.cache.version_dir(name, version))
        ranking = rank_bundles(self.caps, manifests, self.policy, version_keys=carried)
        return Resolved(version=version, ranking=ranking, bundles=readable, source="cache")

    @staticmethod
    def _carried_cached(vdir: Path) -> tuple[str, ...]:
        """The bundle keys the signed metadata listed for a cached version (() if none)."""
        try:
            keys = msgspec.json.decode((vdir / CARRIED_FILE).read_bytes(), type=list[str])
        except (OSError, msgspec.DecodeError):
            return ()
        return tuple(keys)
