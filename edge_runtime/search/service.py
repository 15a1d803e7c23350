"""One configured catalog index: sync it from the registry like a model, open and warm it off
the event loop, and keep one index per *model version* so a search always uses the index that
matches the model version its query was embedded with.

Why per model version: during a model update the old and new model versions serve side by side
(requests pinned to the old finish on it). Keeping the old version's index until the update is
done means no request ever compares vectors of two model versions; a model version whose index
is not here answers 409 with the reason, while embeddings keep working.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np

from artifacts.bundle import VerifiedBundle, verify_bundle
from artifacts.errors import BundleError, ConflictError, NotReady, ShipyardError
from artifacts.manifest import IndexModel, Manifest
from artifacts.signing import TrustedKeys
from artifacts.targets import INDEX_TARGET
from artifacts.variants import split_key
from edge_runtime.config import EdgeConfig, IndexSection
from edge_runtime.search.catalog_index import CatalogIndex, index_spec
from edge_runtime.sync import BundleCache, ModelState, Syncer

log = logging.getLogger("shipyard.edge")

SEARCH_THREADS = 4  # searches of one index running at once (each in a worker thread)
RETRY_REFUSED_S = 120.0  # an index version refused here is tried again after this
KEEP_MODEL_VERSIONS = 2  # indexes kept for this many model versions (the serving one and the next)


class IndexMismatch(ConflictError):
    """The model version serving this request has no index here (409; embeddings still work)."""


def lock_mismatch(lock: IndexModel, model: Manifest, model_digest: str) -> str | None:
    """Why an index built for ``lock`` must not answer queries embedded by this model bundle of
    the same version (None: it may). The version number alone cannot tell a rebuilt registry's
    "v3" from the v3 the catalog was embedded with; the source weights digest (the same for every
    target of a version) and, for the same target, the bundle's manifest digest can."""
    try:
        built_variant = split_key(lock.target)[1]
    except ValueError:
        return f"its model lock names a malformed bundle {lock.target!r}"
    if built_variant != model.target.variant:
        built = built_variant or "the full model"
        served = model.target.variant or "the full model"
        return (
            f"it was embedded by {built} of {lock.name} v{lock.version}, the node serves "
            f"{served}: a variant's vectors live in another space"
        )
    if lock.source_digest and model.model.source_digest != lock.source_digest:
        return (
            f"it was embedded by a different build of {lock.name} v{lock.version} (source "
            "weights differ): rebuild the index for the model the node serves"
        )
    if (
        lock.manifest_digest
        and model.bundle_key() == lock.target
        and model_digest != lock.manifest_digest
    ):
        return (
            f"it was embedded by a different {lock.target} bundle of {lock.name} v{lock.version} "
            "(manifest digests differ): rebuild the index for the model the node serves"
        )
    return None


class IndexService:
    def __init__(
        self,
        spec: IndexSection,
        config: EdgeConfig,
        syncer: Syncer,
        cache: BundleCache,
        trusted: TrustedKeys,
        serving_version: Callable[[], int | None],
    ) -> None:
        self.name, self.model, self.channel = spec.name, spec.model, spec.channel
        self.hold_swap_s = spec.hold_swap_s
        self.config = config
        self.syncer = syncer
        self.cache = cache
        self.trusted = trusted
        self.serving_version = serving_version
        self.loaded: dict[int, CatalogIndex] = {}  # model version -> its newest index
        self.state = "starting"
        self.last_error = ""
        self.events: deque[tuple[float, str]] = deque(maxlen=30)
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._tried: dict[int, tuple[float, str]] = {}  # index version -> (when, why) refused
        self.limiter = anyio.CapacityLimiter(SEARCH_THREADS)  # concurrent searches

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"index-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        """Poll like a model; while nothing is loaded, sooner (1 s, doubling up to the poll
        interval) so a freshly promoted index serves within seconds, without a fleet hammering
        a registry that has none."""
        poll = self.config.registry.poll_interval_s
        misses = 0
        while True:
            try:
                await anyio.to_thread.run_sync(self.sync_once)
            except Exception as exc:  # a bug must not stop the loop; it is reported
                self._error(f"{type(exc).__name__}: {exc}")
                log.exception("%s: index sync round failed", self.name)
            misses = 0 if self.loaded else misses + 1
            wait = poll if self.loaded else min(poll, 2.0 ** min(misses - 1, 10))
            await asyncio.sleep(wait * random.uniform(0.9, 1.1))

    def _note(self, what: str) -> None:
        self.events.append((time.time(), what))
        log.info("index %s: %s", self.name, what)

    def _error(self, error: str) -> None:
        if error != self.last_error:
            self.events.append((time.time(), f"error: {error}"))
            log.warning("index %s: %s", self.name, error)
        self.last_error = error
        if not self.loaded:
            self.state = "not-ready"

    # ---- sync ------------------------------------------------------------------------------

    def sync_once(self) -> None:
        """One round: the channel's index version, verified on disk, opened and warmed (from
        the cache when the registry cannot answer and nothing is loaded yet)."""
        try:
            resolved = self.syncer.from_registry(self.name, self.channel)
        except (ShipyardError, OSError) as exc:
            self._error(f"registry: {exc}")
            if not self.loaded:
                self._from_cache()
            return
        path = resolved.bundles.get(INDEX_TARGET)
        if path is None:
            why = resolved.errors.get(INDEX_TARGET) or "; ".join(
                e.reason for e in resolved.ranking.excluded
            )
            self._error(f"v{resolved.version} has no usable {INDEX_TARGET} bundle ({why})")
            return
        self._install(resolved.version, path)

    def _from_cache(self) -> None:
        for version in self.syncer.cached_versions(self.name):
            path = self.cache.bundles(self.name, version).get(INDEX_TARGET)
            if path is not None and self._install(version, path):
                self._note(f"serving v{version} from the local cache")
                return

    def _current(self, version: int) -> bool:
        return any(ix.version == version for ix in self.loaded.values())

    def _install(self, version: int, path: Path) -> bool:
        if self._current(version):
            self.last_error = ""
            return True
        tried = self._tried.get(version)
        if tried is not None and time.monotonic() - tried[0] < RETRY_REFUSED_S:
            self._error(tried[1])
            return False
        try:
            new = self._open(path)
        except Exception as exc:  # whatever a bad bundle makes a library raise: refused
            self._tried[version] = (time.monotonic(), f"v{version} refused: {exc}")
            self._error(self._tried[version][1])
            return False
        model_version = new.model.version
        with self._lock:
            old = self.loaded.get(model_version)
            self.loaded[model_version] = new
            self._prune()
        self.state, self.last_error = "ready", ""
        self.cache.save_state(  # the cache fallback after a restart prefers this version
            self.name,
            ModelState(good_version=version, channel=self.channel, updated_at=time.time()),
        )
        what = f"v{new.version} ({new.items} items) for {self.model} v{model_version}"
        self._note(f"{'replaced v' + str(old.version) + ' by ' if old else 'loaded '}{what}")
        protect = {ix.version for ix in self.loaded.values()}
        protect |= {ix.base_bundle.manifest.model.version for ix in self.loaded.values()}
        self.cache.gc(self.name, self.config.cache.keep_versions + 1, protect=protect)
        return True

    def _open(self, path: Path) -> CatalogIndex:
        bundle = verify_bundle(path, self.trusted)
        spec = index_spec(bundle)
        if spec.model.name != self.model:
            raise BundleError(
                f"it indexes vectors of model {spec.model.name!r}; this node pairs "
                f"{self.name} with {self.model!r}"
            )
        if spec.base_version:
            base = self._base(spec.base_version, spec.base_digest)
            reuse = self.loaded.get(spec.model.version)
            index = CatalogIndex(base, bundle, reuse=reuse)
        else:
            index = CatalogIndex(bundle)
        probe = np.random.default_rng(0).standard_normal(spec.dim).astype(np.float32)
        index.search(probe, 10)  # warm: the first pages of the graph, the items
        return index

    def _base(self, version: int, digest: str) -> VerifiedBundle:
        """The full index a delta names, by version *and* manifest digest: a cached copy that
        is not that manifest is removed and fetched again."""
        for ix in self.loaded.values():
            if ix.base_bundle.digest == digest:
                return ix.base_bundle
        for attempt in (1, 2):
            path = self.cache.bundles(self.name, version).get(INDEX_TARGET)
            if path is None:
                resolved = self.syncer.from_registry(self.name, self.channel, version=version)
                path = resolved.bundles.get(INDEX_TARGET)
                if path is None:
                    raise BundleError(
                        f"its base v{version} cannot be fetched: "
                        + (resolved.errors.get(INDEX_TARGET) or "no index bundle")
                    )
            bundle = verify_bundle(path, self.trusted)
            if bundle.digest == digest:
                return bundle
            shutil.rmtree(path, ignore_errors=True)
            if attempt == 2:
                raise BundleError(f"base v{version} is not the manifest its delta names")
        raise AssertionError("unreachable")

    def _prune(self) -> None:
        """Keep the indexes of the serving model version and the newest ones."""
        serving = self.serving_version()
        newest = sorted(self.loaded, reverse=True)[:KEEP_MODEL_VERSIONS]
        for mv in list(self.loaded):
            if mv not in newest and mv != serving:
                del self.loaded[mv]

    # ---- serving ---------------------------------------------------------------------------

    def for_model_version(self, version: int) -> CatalogIndex:
        with self._lock:
            found = self.loaded.get(version)
            have = sorted(self.loaded)
        if found is not None:
            return found
        if not have:  # the reason (registry URLs, paths) is for /v1/status, not for callers
            raise NotReady(f"index {self.name} is not loaded yet ({self.state}; see /v1/status)")
        raise IndexMismatch(
            f"index {self.name} has no version built for {self.model} v{version} (loaded: "
            f"{', '.join(f'for v{v}' for v in have)}); embeddings still work — build and "
            f"promote an index for {self.model} v{version}"
        )

    def swap_gate(self, model_version: int) -> str | None:
        """Why a model update to ``model_version`` should wait (None: its index is here)."""
        with self._lock:
            if model_version in self.loaded:
                return None
        return f"index {self.name} for {self.model} v{model_version} is not loaded yet"

    def status(self) -> dict:
        with self._lock:
            loaded = sorted(self.loaded.items())
        return {
            "index": self.name,
            "model": self.model,
            "channel": self.channel,
            "state": self.state,
            "last_error": self.last_error,
            "loaded": [
                {
                    "model_version": mv,
                    "index_version": ix.version,
                    "base_version": ix.base_bundle.manifest.model.version,
                    "embedded_with": ix.model.target,
                    "items": ix.items,
                    "fields": ix.fields(),
                    "recall_at_10": index_spec(ix.base_bundle).recall_at_10,
                }
                for mv, ix in loaded
            ],
            "events": [{"at": at, "detail": d} for at, d in self.events],
        }
