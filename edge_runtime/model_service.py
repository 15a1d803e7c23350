"""One served model: sync, select, serve, update (hot swap), fail over.

States: ``starting`` → ``ready`` (a verified, smoke-checked backend serves) or ``not-ready``
(with the reason; retried with backoff). Updates load the new version beside the old one,
smoke-check and warm it, then swap atomically between batches and close the old backend once
its in-flight batch is done; a failed update keeps the old version serving and is reported.
A backend that fails at run time is replaced by the next candidate and the failed batch is
retried on it, so admitted requests are not dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import numpy as np
import stamina

from artifacts.errors import NotReady, RegistryUnavailableError, ShipyardError
from artifacts.signing import TrustedKeys
from artifacts.states import EventKind, ServeState
from artifacts.textproc import Encoded
from edge_runtime import memory
from edge_runtime.batching import Batcher
from edge_runtime.channel_metadata import MetadataRefused, StaleMetadata
from edge_runtime.config import EdgeConfig, ModelSection
from edge_runtime.errors import BackendFailure
from edge_runtime.inference.result_cache import ResultCache
from edge_runtime.loaded_model import LoadedModel
from edge_runtime.metrics import Metrics
from edge_runtime.selection import Outcome, Selection, SelectOptions, select
from edge_runtime.sync import BundleCache, ModelState, Resolved, Syncer

log = logging.getLogger("shipyard.edge")
MAX_FAILOVERS = 2
RETRY_BAD_VERSION_S = 600.0  # a version that failed on this node is tried again after this


class _RoundFailed(Exception):
    """A sync round did not reach its goal (retried by stamina with backoff)."""


@dataclass
class Event:
    at: float
    kind: EventKind
    detail: str


class ModelService:
    def __init__(
        self,
        spec: ModelSection,
        config: EdgeConfig,
        syncer: Syncer,
        cache: BundleCache,
        trusted: TrustedKeys,
        metrics: Metrics,
    ) -> None:
        self.name = spec.name
        self.channel = spec.channel
        self.config = config
        self.syncer = syncer
        self.cache = cache
        self.trusted = trusted
        self.metrics = metrics
        self.state = ServeState.STARTING
        self.reason = "starting"
        self.serving: LoadedModel | None = None
        self.resolved: Resolved | None = None
        self.outcomes: list[Outcome] = []
        self.events: deque[Event] = deque(maxlen=50)
        self.last_sync_ok: float | None = None
        self.last_sync_error: str = ""
        self.metadata_state = "unknown"  # fresh | stale-metadata | metadata refused | not used
        self._lock = threading.Lock()  # guards serving swaps vs. the inference thread
        self._failed: set[str] = set()  # targets that failed at run time (this version)
        self.settings = config.backends.settings()
        self.batcher = Batcher(
            self.name,
            config.batching,
            self._run_batch,
            metrics,
            on_idle=self._release_memory,
            run_inline=self._run_here,
        )
        self.admission = self.batcher.admission
        self.cache_results = ResultCache(config.result_cache.max_bytes, config.result_cache.ttl_s)
        self._tasks: list[asyncio.Task] = []
        self._bad_versions: dict[int, tuple[float, str]] = {}  # failed here: when, why
        self._batch_ms: deque[float] = deque(maxlen=256)
        # target -> its inference-seconds series (``labels()`` locks and builds a key per call)
        self._inference_series: dict[str, Any] = {}
        self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sync-{self.name}")
        self._pending: asyncio.Future[Resolved] | None = None
        self._pending_since = 0.0
        # An update waits (at most swap_hold_s) until every gate says its version may serve:
        # a catalog index for that model version must be loaded first (edge_runtime.search).
        self.swap_gates: list[Callable[[int], str | None]] = []
        self.swap_hold_s = 0.0
        self._held: dict[int, float] = {}

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self._bring_up(), name=f"bring-up-{self.name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._sync_thread.shutdown(wait=False, cancel_futures=True)
        await self.batcher.stop()
        if self.serving is not None:
            self.serving.close()

    @property
    def ready(self) -> bool:
        return self.state.serving

    @property
    def public_reason(self) -> str:
        """What any caller may learn (503 bodies, /readyz): the state, not registry URLs or
        error texts — those are in the authenticated /v1/status."""
        return f"{self.state}; the reason is in /v1/status"

    def _event(self, kind: EventKind, detail: str) -> None:
        self.events.append(Event(time.time(), kind, detail))
        (log.warning if kind.is_problem else log.info)("%s: %s: %s", self.name, kind, detail)

    async def _bring_up(self) -> None:
        """First serve (registry, else the cache), then keep polling for updates. Every
        round's failure is caught, counted and reported; retries back off with jitter
        (stamina), so a fleet does not hammer a registry that is coming back."""
        poll = self.config.registry.poll_interval_s
        async for attempt in stamina.retry_context(
            on=_RoundFailed, attempts=None, timeout=None, wait_initial=1.0, wait_max=30.0
        ):
            with attempt:
                await self._round()
                if self.serving is None:
                    raise _RoundFailed(self.reason)
        while True:
            await asyncio.sleep(poll * random.uniform(0.9, 1.1))
            async for attempt in stamina.retry_context(
                on=_RoundFailed,
                attempts=None,
                timeout=None,
                wait_initial=min(1.0, poll),
                wait_max=max(poll, 1.0),
            ):
                with attempt:
                    if not await self._round():
                        raise _RoundFailed(self.last_sync_error)

    async def _round(self) -> bool:
        """One sync round; True when the registry answered. Whatever it raises (a bug, a
        disk error, an answer nobody foresaw) is recorded and the loop goes on: the node
        keeps serving what it has."""
        try:
            return await self._sync_and_maybe_swap()
        except Exception as exc:
            self._sync_failed(exc, "internal error")
            return False

    def _sync_failed(self, exc: BaseException, kind: str) -> None:
        """Count every failure; log it once per distinct error (retries repeat it)."""
        error = str(exc) if isinstance(exc, ShipyardError) else f"{type(exc).__name__}: {exc}"
        repeated = error == self.last_sync_error
        self.last_sync_error = error
        self.metrics.sync_errors.labels(self.name, kind).inc()
        if repeated:
            return
        if kind == "internal error":
            log.error("%s: sync round failed", self.name, exc_info=exc)
        serving = f"v{self.serving.version}" if self.serving else "nothing"
        self._event(EventKind.SYNC_ERROR, f"{kind}: {error}; serving {serving}")

    async def _from_registry(self) -> Resolved:
        """The registry round in this model's sync thread, awaited for at most
        ``round_timeout_s``; one still running then is reported as a stalled registry and its
        result taken by a later round (never a second thread beside it)."""
        if self._pending is None:
            self._pending_since = time.monotonic()
            self._pending = asyncio.get_running_loop().run_in_executor(
                self._sync_thread, self.syncer.from_registry, self.name, self.channel
            )
        pending = self._pending
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending), self.config.registry.round_timeout_s
            )
        except TimeoutError:
            waited = time.monotonic() - self._pending_since
            raise RegistryUnavailableError(
                f"the registry round has run {waited:.0f} s without finishing (a stalled or "
                "trickling registry); still waiting for it"
            ) from None
        finally:
            if pending.done():
                self._pending = None

    async def _sync_and_maybe_swap(self) -> bool:
        try:
            resolved = await self._from_registry()
        except Exception as exc:  # whatever the registry did, the cache may still serve
            kind = (
                "registry unreachable"
                if isinstance(exc, RegistryUnavailableError)
                else "stale-metadata"
                if isinstance(exc, StaleMetadata)
                else "metadata refused"
                if isinstance(exc, MetadataRefused)
                else "registry error"
            )
            if isinstance(exc, StaleMetadata | MetadataRefused):
                self.metadata_state = kind
            self._sync_failed(exc, kind)
            if self.serving is None and not await self._serve_cached(frozenset(), ""):
                self._not_ready(f"{kind} ({self.last_sync_error}) and no usable cached version")
            return False
        self.last_sync_ok, self.last_sync_error = time.time(), ""
        self.metadata_state = "fresh" if self.syncer.metadata is not None else "not used"
        if self.serving is not None and resolved.version == self.serving.version:
            await self._upgrade_within_version(resolved)
            return True  # nothing new
        failed_at = self._bad_versions.get(resolved.version)
        if failed_at is not None and time.monotonic() - failed_at[0] < RETRY_BAD_VERSION_S:
            return True  # it failed here recently; keep serving what works
        if self.serving is not None and self._held_back(resolved.version):
            return True
        selection = await anyio.to_thread.run_sync(self._select, resolved, set())
        if selection.chosen is not None:
            self._bad_versions.pop(resolved.version, None)
            self._swap(selection, resolved)
            return True
        why = f"v{resolved.version} failed: {selection.reason}"
        if not resolved.errors:  # every bundle was here and failed: not worth retrying soon
            self._bad_versions[resolved.version] = (time.monotonic(), selection.reason)
        if self.serving is None:
            self.resolved, self.outcomes = resolved, selection.outcomes
            if not await self._serve_cached(frozenset({resolved.version}), why):
                self._not_ready(selection.reason)
            return True
        self._event(EventKind.UPDATE_FAILED, f"{why}; still serving v{self.serving.version}")
        self._degrade(why)
        return True

    def _held_back(self, version: int) -> bool:
        """True while an update to ``version`` must wait for what it needs (its catalog index),
        for at most ``swap_hold_s``; after that it swaps alone and says so."""
        reasons = [r for gate in self.swap_gates if (r := gate(version))]
        if not reasons:
            self._held.pop(version, None)
            return False
        now = time.monotonic()
        since = self._held.setdefault(version, now)
        why = "; ".join(reasons)
        if now - since < self.swap_hold_s:
            if since == now:
                self._event(
                    EventKind.UPDATE_HELD,
                    f"v{version} waits up to {self.swap_hold_s:.0f} s: {why}",
                )
            return True
        self._event(
            EventKind.UPDATE_HELD, f"v{version} swaps after {now - since:.0f} s without: {why}"
        )
        return False

    async def _upgrade_within_version(self, resolved: Resolved) -> None:
        """A bundle that failed to download earlier (so a lower-ranked one serves) may be here
        now: select again, and swap if a better-ranked candidate passes."""
        before = self.resolved
        if before is None or not (set(before.errors) & set(resolved.bundles)):
            return
        selection = await anyio.to_thread.run_sync(self._select, resolved, set(self._failed))
        chosen, serving = selection.chosen, self.serving
        if chosen is None or serving is None or chosen.target == serving.target:
            if chosen is not None and chosen is not serving:
                chosen.close()
            with self._lock:
                self.resolved = resolved  # what is on disk now: do not try again
            return
        self._swap(selection, resolved)

    async def _serve_cached(self, exclude: frozenset[int], why: str) -> bool:
        """Last known good: the first cached version (good one first, then newest down) that
        verifies, loads and passes its smoke check here. ``why``: the newest failed."""
        for version in self.syncer.cached_versions(self.name, exclude):
            resolved = await anyio.to_thread.run_sync(self.syncer.from_cache, self.name, version)
            if resolved is None or not resolved.bundles:
                continue
            selection = await anyio.to_thread.run_sync(self._select, resolved, set())
            if selection.chosen is None:
                continue
            self._swap(selection, resolved)
            self._event(EventKind.SYNC_ERROR, f"serving v{version} from the local cache")
            if why:
                self._degrade(why)
            return True
        return False

    def _degrade(self, why: str) -> None:
        """Serving, but not the newest version: say so here and in the fleet heartbeat."""
        assert self.serving is not None
        self.state = ServeState.DEGRADED
        self.reason = f"degraded: serving v{self.serving.version}, {why}"[:600]
        self.metrics.degraded.labels(self.name).set(1)

    def _select(self, resolved: Resolved, skip: set[str]) -> Selection:
        return select(
            resolved.version,
            resolved.bundles,
            resolved.ranking,
            self.trusted,
            self.settings,
            SelectOptions(
                mode=self.config.backends.select,
                measure_s=self.config.backends.measure_s,
                skip=frozenset(skip),
                missing=resolved.errors,
            ),
        )

    def _swap(self, selection: Selection, resolved: Resolved) -> None:
        new = selection.chosen
        assert new is not None
        with self._lock:
            old = self.serving
            self.serving = new
            self.resolved = resolved
            self.outcomes = selection.outcomes
            self._failed = set()
        self.state, self.reason = ServeState.READY, f"serving v{new.version} with {new.target}"
        self.metrics.ready.labels(self.name).set(1)
        self.metrics.degraded.labels(self.name).set(0)
        if old is not None:
            self.metrics.active.labels(self.name, old.target, str(old.version)).set(0)
        self.metrics.active.labels(self.name, new.target, str(new.version)).set(1)
        self.cache.save_state(
            self.name,
            ModelState(good_version=new.version, channel=self.channel, updated_at=time.time()),
        )
        self.cache.gc(self.name, self.config.cache.keep_versions, protect={new.version})
        if old is None:
            self._event(
                EventKind.SELECTED,
                f"v{new.version} {new.target} ({resolved.source}); {new.smoke.describe() if new.smoke else ''}",
            )
        else:
            self._event(
                EventKind.SWAPPED, f"v{old.version} {old.target} -> v{new.version} {new.target}"
            )
            threading.Thread(target=self._drain_and_close, args=(old,), daemon=True).start()

    def _drain_and_close(self, old: LoadedModel) -> None:
        """Close a replaced model once the requests pinned to it are answered (bounded by the
        longest deadline a request may ask for), then hand the memory it freed back to the OS:
        glibc keeps a closed session's pages, and with no idle spell to release them (steady
        traffic) 20 swaps grew RSS by 152-195 MB, against 5-11 MB with the trim
        (``python -m bench.swap_memory``; Python's own allocations flat in both)."""
        deadline = time.monotonic() + 10 * self.config.server.request_timeout_ms / 1000 + 5
        while (old.inflight > 0 or old.pinned > 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        old.close()
        memory.trim()

    def serving_version(self) -> int | None:
        serving = self.serving
        return serving.version if serving is not None else None

    def pin(self) -> LoadedModel:
        """The model a new request runs on, start to end (see :meth:`unpin`)."""
        with self._lock:
            model = self.serving
            if model is None:
                raise NotReady(f"model {self.name} is not ready ({self.public_reason})")
            model.pinned += 1
            return model

    def unpin(self, model: LoadedModel) -> None:
        with self._lock:
            model.pinned -= 1

    def _not_ready(self, reason: str) -> None:
        self.state, self.reason = ServeState.NOT_READY, reason
        self.metrics.ready.labels(self.name).set(0)
        self._event(EventKind.NOT_READY, reason)

    # ---- inference (runs on the batcher's inference thread) ---------------------------------

    def _run_here(self, pinned: object, batch: list[Encoded]) -> np.ndarray | None:
        """The batcher's run on the event loop: a CPU backend only (a GPU engine's context
        and stream belong to the inference thread; None sends the batch there), and no
        fail-over (a failure is retried on the inference thread)."""
        model = pinned if isinstance(pinned, LoadedModel) else None
        if model is None or model.failed or model.backend.device != "cpu":
            return None
        return self._run_batch(model, batch, failover=False)

    def _run_batch(
        self, pinned: object, batch: list[Encoded], *, failover: bool = True
    ) -> np.ndarray:
        """Run on the model the batch's requests are pinned to; on a run-time failure, fail
        over to the next candidate *of the same version* and retry the batch there (at most
        ``MAX_FAILOVERS`` times). ``failover=False`` (a run on the event loop): raise instead,
        so the batcher retries on the inference thread, where opening another backend does
        not stall the event loop."""
        failovers = 0
        model = pinned if isinstance(pinned, LoadedModel) else None
        while True:
            with self._lock:
                if model is None or model.failed:
                    current = self.serving
                    if current is None or (model is not None and current.version != model.version):
                        raise BackendFailure(
                            f"{self.name}: the backend this request was admitted under failed "
                            f"and v{model.version if model else '?'} is no longer served"
                        )
                    model = current
                model.inflight += 1
            t0 = time.perf_counter()
            try:
                out = model.run(batch)
            except Exception as exc:
                if not failover:
                    raise
                if failovers >= MAX_FAILOVERS:
                    raise BackendFailure(
                        f"{self.name}: every fallback failed; last error: {exc}"
                    ) from exc
                failovers += 1
                self._failover(model, exc)
                model.failed = True
                continue
            finally:
                model.inflight -= 1
            elapsed = time.perf_counter() - t0
            if failover:
                self._ran(model.target, elapsed)
            else:  # on the event loop: recorded after the answer is sent
                self.batcher.later(self._ran, model.target, elapsed)
            return out

    def _ran(self, target: str, seconds: float) -> None:
        """A batch's backend time into the inference histogram and the recent-batches window."""
        series = self._inference_series.get(target)
        if series is None:  # bounded: a model's targets
            series = self.metrics.inference.labels(self.name, target)
            self._inference_series[target] = series
        series.observe(seconds)
        self._batch_ms.append(seconds * 1e3)

    def _release_memory(self) -> None:
        """Between bursts: the engine's arena gives back its free chunks, then glibc its free pages."""
        with self._lock:
            model = self.serving
            if model is not None:
                model.inflight += 1
        if model is not None:
            try:
                model.release_memory()
            except Exception as exc:  # never worth failing over for
                log.debug("%s: releasing memory failed: %s", self.name, exc)
            finally:
                model.inflight -= 1
        memory.trim()

    def _failover(self, failed: LoadedModel, exc: Exception) -> None:
        """Replace a backend that failed at run time by the next candidate of its version."""
        with self._lock:
            if self.serving is not failed:
                return  # someone already replaced it
            self._failed.add(failed.target)
            resolved = self.resolved
        reason = f"{type(exc).__name__}: {exc}"[:300]
        if resolved is None:
            raise BackendFailure(reason) from exc
        # only the same model: another variant's vectors live in another space (an index built
        # with one would answer garbage for the other), and its quality is another model's
        variant = failed.manifest.target.variant
        other_models = {c.target for c in resolved.ranking.eligible if c.variant != variant}
        selection = self._select(resolved, set(self._failed) | other_models)
        if selection.chosen is None:
            self._not_ready(f"{failed.target} failed at run time ({reason}) and no fallback passed")
            raise BackendFailure(reason) from exc
        new = selection.chosen
        self.metrics.fallbacks.labels(self.name, failed.target, new.target, "runtime-error").inc()
        with self._lock:
            self.serving = new
            self.outcomes = selection.outcomes
        self.metrics.active.labels(self.name, failed.target, str(failed.version)).set(0)
        self.metrics.active.labels(self.name, new.target, str(new.version)).set(1)
        self.reason = f"serving v{new.version} with {new.target} (fell back from {failed.target})"
        self._event(
            EventKind.FALLBACK, f"{failed.target} failed at run time ({reason}); now {new.target}"
        )
        threading.Thread(target=self._drain_and_close, args=(failed,), daemon=True).start()

    def batch_p50_ms(self) -> float | None:
        times = sorted(self._batch_ms)
        return round(times[len(times) // 2], 3) if times else None

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict:
        m = self.serving
        return {
            "model": self.name,
            "channel": self.channel,
            "state": self.state,
            "reason": self.reason,
            "version": m.version if m else None,
            "target": m.target if m else None,
            "backend": m.info if m else {},
            "task": m.manifest.model.task if m else None,
            "source": self.resolved.source if self.resolved else None,
            "candidates": [msgspec.to_builtins(o) for o in self.outcomes],
            "last_sync_ok": self.last_sync_ok,
            "last_sync_error": self.last_sync_error,
            "metadata": self.metadata_state,
            "events": [{"at": e.at, "kind": e.kind, "detail": e.detail} for e in self.events],
            "queue": {
                "queued_tokens": self.admission.queued_tokens,
                "admission_limit_tokens": int(self.admission.limit),
                "queue_delay_ewma_ms": round(self.admission.delay_ewma_s * 1000, 3),
                "drain_tokens_per_s": round(self.admission.drain_tokens_per_s, 1),
                "rejected": self.admission.rejected,
                "batches": self.batcher.batches,
            },
            "result_cache": {
                "entries": len(self.cache_results),
                "bytes": self.cache_results.bytes,
                "hits": self.cache_results.stats.hits,
                "misses": self.cache_results.stats.misses,
                "evictions": self.cache_results.stats.evictions,
            },
        }
