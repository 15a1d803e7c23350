"""The dynamic batcher: one per model, a token budget per batch, overload turned into 429.

Items (one input of a request) wait in a FIFO. When the backend is free the batcher takes
the oldest item and the waiting items closest to it in length (sorted by token count, cutting
padding) until ``max_batch_size`` items, ``max_batch_tokens`` padded tokens, or padding would
pass ``max_padding`` of the batch (a long description stays out of a batch of titles: both run
sooner in two batches than padded together). It does not
wait when idle — a single query runs at once — except briefly (``max_wait_ms``) when other
admitted requests are still being tokenised and would join. Expired items (deadline) and
cancelled requests are skipped. A request carries the model it was pinned to on arrival and
a batch holds items of one model only, so a hot swap never splits a response across
versions. Inference runs on one dedicated thread, so the event loop
keeps tokenising and admitting the next requests while a batch runs; only a lone short query
while no two requests overlap (c=1) runs on the event loop itself, on the request's own task,
saving the hand-offs (to the inference thread, and to the batcher's task and back).

Bulk work (the catalog queue's embed jobs, :meth:`Batcher.submit_bulk`) waits in a second,
low-priority lane: a bulk batch runs only when no interactive item is waiting, is not counted in
interactive admission, and is refused while interactive admission is past half its limit, so the
embed worker backs off. While interactive traffic is present, bulk batches are kept short and
spaced (:class:`BulkPacer`): an interactive request waits behind at most one short bulk batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from artifacts.errors import DeadlineExceeded, Overloaded
from artifacts.textproc import Encoded
from edge_runtime import memory
from edge_runtime.batching.admission import Admission
from edge_runtime.batching.bulk_pacer import BulkPacer
from edge_runtime.batching.tuner import SizeTuner
from edge_runtime.config import BatchingSection
from edge_runtime.metrics import Metrics

log = logging.getLogger(__name__)
_NO_MODEL = object()

WAIT_WINDOW_S = 10.0
# a lone query runs on the event loop only after this long without two requests overlapping
INLINE_QUIET_S = 1.0
# ... and only while lone queries take at most this long (EWMA): the loop is blocked meanwhile
INLINE_BUDGET_MS = 10.0
# padding below this many tokens per batch is never worth a second batch
PAD_FREE_TOKENS = 64
# a lone inline query's accounting waits at most this long (or for a scrape of the metrics):
# run one by one after each answer, it landed on the next query's path (a client on loopback
# sends that query within ~30 µs, before the loop ran the accounting)
ACCOUNT_AFTER_S = 0.02
ACCOUNT_MAX_PENDING = 256


class BulkLaneFull(Overloaded):
    """The bulk lane holds its limit: the embed worker waits (not a sign of interactive load)."""


@dataclass(slots=True)
class Pending:
    size: int
    deadline: float
    future: asyncio.Future
    tokens: int
    model: object = None  # what the request was pinned to (handed back to run_batch)
    results: list = field(default_factory=list)
    remaining: int = 0
    # tracing: the batches that ran this request's items (the caller makes spans of them)
    timings: list[BatchTiming] | None = None
    enqueued_ns: int = 0
    bulk: bool = False  # the low-priority lane (tokens counted in Batcher.bulk_tokens)

    def __post_init__(self) -> None:
        self.results = [None] * self.size
        self.remaining = self.size


@dataclass(frozen=True)
class BatchTiming:
    """One batch as a request's trace shows it (wall-clock ns)."""

    started_ns: int  # taken off the queue
    infer_start_ns: int  # the backend call, on the inference thread
    infer_end_ns: int
    ended_ns: int
    size: int
    padded_tokens: int


@dataclass(slots=True)
class Item:
    pending: Pending
    index: int
    enc: Encoded
    enqueued: float


class Batcher:
    def __init__(
        self,
        name: str,
        cfg: BatchingSection,
        run_batch: Callable[[object, list[Encoded]], np.ndarray],
        metrics: Metrics,
        on_idle: Callable[[], object] = memory.trim,
        run_inline: Callable[[object, list[Encoded]], np.ndarray | None] | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.run_batch = run_batch  # called on the inference thread
        # a lone query on the event loop (no fail-over: a failure is retried on the thread;
        # None: this batch runs on the thread)
        self.run_inline = run_inline or run_batch
        # run on the inference thread once the queue has stayed empty for
        # ``release_after_idle_ms`` after a batch: hands the burst's working memory back
        self.on_idle = on_idle
        self.idle_after_s = cfg.release_after_idle_ms / 1000
        self.metrics = metrics.of_batcher(name)
        metrics.on_render(self.run_later)  # a scrape sees every answered query
        self.admission = Admission.from_config(cfg)
        # read when scraped, not set twice per request on its path
        admission = weakref.ref(self.admission)
        self.metrics.queued_tokens.set_function(lambda: getattr(admission(), "queued_tokens", 0))
        self.queue: deque[Item] = deque()
        self.bulk: deque[Item] = deque()  # low priority: runs only when ``queue`` is empty
        self.bulk_tokens = 0
        # interactive queueing delays: (when, seconds), the last WAIT_WINDOW_S only
        self.waits: deque[tuple[float, float]] = deque(maxlen=1024)
        self.tokenising = 0  # admitted requests not yet enqueued
        self.tokenising_chars = 0  # their characters (bounded by limits.max_tokenising_chars)
        # the task whose inline run blocked the loop in this loop step (see _ran_now)
        self._inline_task: asyncio.Task | None = None
        # work put off until after answers (see later()): run together, off the queries' path
        self._later: list[tuple[Callable[..., object], tuple]] = []
        self._later_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.running = False  # a batch is on the inference thread
        self.releasing = False  # on_idle is on the inference thread (no inline run meanwhile)
        self._overlap_at = -INLINE_QUIET_S  # when two interactive requests last overlapped
        self._quiet_since = 0.0  # when the queue last emptied after a batch
        self._released_after = 0  # self.batches when memory was last released
        self.lone_ms = 0.0  # EWMA of a lone interactive query's backend time
        # the model an inline run failed on or declined (never tried on the loop again)
        self._no_inline: object = _NO_MODEL
        self.batches = 0
        self.tuner = SizeTuner(cfg.max_batch_size)
        self.item_tokens = 0.0  # EWMA of real tokens per interactive item (admission's floor)
        self.pacer = BulkPacer(cfg.bulk_max_batch_tokens, cfg.bulk_batch_ms, cfg.bulk_share)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        self.run_later()
        if self._task:
            self._task.cancel()
            self._task = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self,
        encoded: list[Encoded],
        deadline: float,
        model: object = None,
        timings: list[BatchTiming] | None = None,
    ) -> list[np.ndarray]:
        """Queue the items of one request (run on ``model``); resolve with their outputs.
        ``timings``: filled with the batches that ran them (for the request's trace)."""
        tokens = sum(len(e) for e in encoded)
        if self._later and (self.running or self.queue or self.tokenising):
            # requests overlap: the quiet spell's put-off accounting lands before this request
            # is admitted, so admission learns from it in order (not once a flood has filled
            # the queue, when its "queue in use, no wait" would raise the limit)
            self.run_later()
        retry = self.admission.try_admit(tokens)
        if retry is not None:
            self.metrics.rejected.inc()
            raise Overloaded(
                f"{self.name} is at capacity ({self.admission.queued_tokens} tokens queued, limit "
                f"{int(self.admission.limit)}); retry after {retry:.0f} s",
                retry,
            )
        if self.running or self.queue or self.tokenising:
            self._overlap_at = time.monotonic()
        pending = Pending(
            size=len(encoded),
            deadline=deadline,
            future=asyncio.get_running_loop().create_future(),
            tokens=tokens,
            model=model,
            timings=timings,
            enqueued_ns=time.time_ns() if timings is not None else 0,
        )
        return await self._wait(pending, encoded, self.queue)

    async def _wait(self, pending: Pending, encoded: list[Encoded], lane: deque[Item]):
        """Queue the request's items in ``lane``; its results (cancelled if the caller goes)."""
        now = time.monotonic()
        items = [Item(pending, i, e, now) for i, e in enumerate(encoded)]
        try:
            if not (lane is self.queue and self._ran_now(items)):
                lane.extend(items)
                self._wake.set()
            return await pending.future
        finally:
            if not pending.future.done():
                pending.future.cancel()
            self._release(pending)

    async def submit_bulk(
        self, encoded: list[Encoded], deadline: float, model: object
    ) -> list[np.ndarray]:
        """Queue bulk items (run on ``model``) behind every interactive request. Refused
        (Overloaded) while interactive admission is past half its limit or the bulk lane
        holds ``bulk_max_queued_tokens``: the caller backs off."""
        tokens = sum(len(e) for e in encoded)
        if self.admission.queued_tokens > self.admission.limit / 2:
            raise Overloaded(
                f"{self.name}: bulk work waits (interactive {self.admission.queued_tokens} "
                f"tokens queued, limit {int(self.admission.limit)})",
                1.0,
            )
        if self.bulk_tokens and self.bulk_tokens + tokens > self.cfg.bulk_max_queued_tokens:
            raise BulkLaneFull(f"{self.name}: the bulk lane holds {self.bulk_tokens} tokens", 0.1)
        self.bulk_tokens += tokens
        pending = Pending(
            size=len(encoded),
            deadline=deadline,
            future=asyncio.get_running_loop().create_future(),
            tokens=tokens,
            model=model,
            bulk=True,
        )
        return await self._wait(pending, encoded, self.bulk)

    def interactive_wait_p99_ms(self) -> float:
        """p99 of interactive items' queueing delay over the last WAIT_WINDOW_S (the embed
        worker's signal; 0 when no interactive traffic came in that time)."""
        since = time.monotonic() - WAIT_WINDOW_S
        recent = [w for t, w in self.waits if t >= since]
        return float(np.percentile(recent, 99)) * 1e3 if recent else 0.0

    def _take(self) -> list[Item]:
        """Interactive first; bulk only when no interactive item is waiting."""
        chosen = self._take_from(self.queue, self.tuner.cap(), self.cfg.max_batch_tokens)
        now = time.monotonic()
        if chosen or not self.bulk or self.pacer.wait_s(now) > 0:
            return chosen
        cap = min(self.tuner.cap(), self.cfg.max_batch_size)
        return self._take_from(self.bulk, cap, self.pacer.tokens(now))

    def _take_from(self, queue: deque[Item], limit: int, max_tokens: int) -> list[Item]:
        """The oldest live item plus its nearest neighbours in length, within the budget."""
        now = time.monotonic()
        live: list[Item] = []
        window = 4 * self.cfg.max_batch_size  # look this far into the queue for similar lengths
        while queue and len(live) < window:
            it = queue.popleft()
            p = it.pending
            if p.future.done():
                continue
            if now > p.deadline:
                self._release(p)
                self.metrics.expired.inc()
                p.future.set_exception(
                    DeadlineExceeded(f"request waited past its deadline in the {self.name} queue")
                )
                continue
            live.append(it)
        if not live:
            return []
        oldest = live[0]
        by_len = sorted(
            (it for it in live if it.pending.model is oldest.pending.model),
            key=lambda it: len(it.enc),
        )
        pos = by_len.index(oldest)
        chosen = [oldest]
        lo, hi = pos - 1, pos + 1
        longest = real = len(oldest.enc)
        while len(chosen) < limit and (lo >= 0 or hi < len(by_len)):
            # take the neighbour whose length is closest to the batch's current longest item
            cands = []
            if lo >= 0:
                cands.append((longest - len(by_len[lo].enc), lo))
            if hi < len(by_len):
                cands.append((len(by_len[hi].enc) - longest, hi))
            _, idx = min(cands)
            cand = by_len[idx]
            new_longest = max(longest, len(cand.enc))
            padded = new_longest * (len(chosen) + 1)
            if padded > max_tokens:
                break
            waste = padded - real - len(cand.enc)
            if waste > PAD_FREE_TOKENS and waste > self.cfg.max_padding * padded:
                break
            chosen.append(cand)
            longest = new_longest
            real += len(cand.enc)
            if idx == lo:
                lo -= 1
            else:
                hi += 1
        taken = {id(it) for it in chosen}
        queue.extendleft(reversed([it for it in live if id(it) not in taken]))  # keep FIFO order
        return chosen

    def _release(self, p: Pending) -> None:
        if p.bulk:
            self.bulk_tokens -= p.tokens
            p.tokens = 0
            return
        if p.tokens:
            self.admission.release(p.tokens)
            p.tokens = 0

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            if (
                self.tokenising > 0
                and len(self.queue) < self.cfg.max_batch_size
                and self.cfg.max_wait_ms > 0
            ):
                await asyncio.sleep(
                    self.cfg.max_wait_ms / 1000
                )  # let requests being tokenised join
            batch = self._take()
            if batch:
                if self.queue or (len(batch) > 1 and not batch[0].pending.bulk):
                    self._overlap_at = time.monotonic()
                await self._run(batch)
            elif self.bulk and not self.queue:  # bulk holds back: until its turn or a request
                delay = self.pacer.wait_s(time.monotonic())
                if delay > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    self._wake.set()
                    continue
            if not self.queue and not self.bulk:
                self._wake.clear()
                if batch:
                    self._quiet_since = time.monotonic()
                self._arm_idle()  # also when the burst's last items expired instead of running

    async def _run(self, batch: list[Item]) -> None:
        """Run one batch (shortest first, see :meth:`_infer`); account for it; answer."""
        started, started_ns = time.monotonic(), time.time_ns()
        ordered = sorted(batch, key=lambda it: len(it.enc))
        padded = len(ordered[-1].enc) * len(ordered)
        out: np.ndarray | None = None
        error: Exception | None = None
        infer = [0, 0]
        try:
            out = await self._infer(ordered, padded, infer)
        except Exception as exc:  # the service already tried to fail over
            error = exc
        self._finish(ordered, padded, (started, started_ns), infer, out, error)

    def _ran_now(self, items: list[Item]) -> bool:
        """c=1: a lone query that may run on the event loop runs right here, on the caller's
        task — no hop to the batcher's task and back, and no yield. Requests ready at the same
        moment must still meet in the queue: a request whose task was already waiting to run
        when another task's inline run blocked the loop (e.g. a burst read in one loop step)
        comes here before the loop's next step, sees that run's mark, and queues, as an
        overlap."""
        if self._task is None or len(items) != 1:
            return False
        if self._inline_task is not None and self._inline_task is not asyncio.current_task():
            self._overlap_at = time.monotonic()
            self.run_later()  # see submit()
            return False
        return self._run_now(items)

    def _end_inline_step(self) -> None:
        self._inline_task = None

    def _run_now(self, items: list[Item]) -> bool:
        """A lone query run inline right away (see :meth:`_inline`), accounted and answered as
        a batch of one; False when it may not run on the loop now or its inline run failed
        (then it queues, and the batcher's task runs it on the inference thread)."""
        it = items[0]  # one item (checked by _ran_now); the state may have changed since
        if it.enqueued > it.pending.deadline or not self._inline(items, len(it.enc)):
            return False
        started, started_ns = time.monotonic(), time.time_ns()
        infer = [0, 0]
        out = self._try_inline(items, infer)
        if out is None:
            return False
        # requests already waiting to run now meet in the queue (see _ran_now) until the loop's
        # next step: its callbacks run after theirs
        if self._inline_task is None:
            asyncio.get_running_loop().call_soon(self._end_inline_step)
        self._inline_task = asyncio.current_task()
        self._quiet_since = time.monotonic()
        if it.pending.timings is not None:  # traced: the caller reads the batch's timing next
            self._finish(items, len(it.enc), (started, started_ns), infer, out, None)
            self._after_inline()
            return True
        # answer first: the caller's task resumes without yielding and writes the response;
        # the accounting (pacer, tuner, admission, metrics, the idle timer) runs later,
        # together with the next few queries' (see later())
        ran = self._quiet_since - started
        self.batches += 1
        self._deliver(items, out, None)
        self.later(self._account_inline, it, ran, started)
        return True

    def later(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the event loop after this answer and the next few: after
        ACCOUNT_AFTER_S, before the metrics are rendered (:meth:`run_later`), before any batch
        or overlapping request is accounted or admitted, or at once when ACCOUNT_MAX_PENDING
        calls wait. For bookkeeping that no answer waits for; event-loop thread only."""
        self._later.append((fn, args))
        if len(self._later) >= ACCOUNT_MAX_PENDING:
            self.run_later()
        elif self._later_timer is None:
            self._later_timer = asyncio.get_running_loop().call_later(
                ACCOUNT_AFTER_S, self.run_later
            )

    def run_later(self) -> None:
        """Run the work :meth:`later` put off, in order (on the event loop)."""
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        work, self._later = self._later, []
        for fn, args in work:
            try:
                fn(*args)
            except Exception:  # bookkeeping: never lose the rest of it
                log.exception("%s: deferred accounting failed", self.name)

    def _account_inline(self, it: Item, ran: float, started: float) -> None:
        """The accounting of a lone inline run, after its answer (see :meth:`_run_now`)."""
        try:
            self._account([it], len(it.enc), started, ran, None)
        finally:  # the idle release is armed whatever happened
            self._after_inline()

    def _after_inline(self) -> None:
        if not self.bulk:  # else the batcher's task arms it after the bulk lane's batches
            self._arm_idle()

    def _arm_idle(self) -> None:
        """One release timer, not one per batch: armed after any batch since the last release."""
        if self._idle_timer is None and self.batches != self._released_after:
            self._idle_timer = asyncio.get_running_loop().call_later(self.idle_after_s, self._idle)

    def _finish(
        self,
        ordered: list[Item],
        padded: int,
        clock: tuple[float, int],
        infer: list[int],
        out: np.ndarray | None,
        error: Exception | None,
    ) -> None:
        """Account for a batch that ran (timings, tuner, admission, metrics); answer it.
        ``clock``: when it was taken (monotonic s, wall-clock ns)."""
        if self._later:  # earlier inline runs first: admission and the pacer learn in order
            self.run_later()
        started, started_ns = clock
        ran = time.monotonic() - started
        pendings = (
            (ordered[0].pending,)
            if len(ordered) == 1
            else {id(it.pending): it.pending for it in ordered}.values()
        )
        timing: BatchTiming | None = None
        for p in pendings:
            if p.timings is not None:  # traced requests only
                timing = timing or BatchTiming(
                    started_ns, infer[0], infer[1], time.time_ns(), len(ordered), padded
                )
                p.timings.append(timing)
        self.batches += 1
        self._account(ordered, padded, started, ran, error)
        self._deliver(ordered, out, error)

    def _account(
        self, ordered: list[Item], padded: int, started: float, ran: float, error: Exception | None
    ) -> None:
        """What a batch that ran ``ran`` s from ``started`` teaches the pacer, tuner and
        admission, and its metrics (not its answer: :meth:`_deliver`)."""
        real = sum(len(it.enc) for it in ordered)
        if ordered[0].pending.bulk:
            self.pacer.ran(time.monotonic(), ran)
        else:
            self.pacer.interactive(
                time.monotonic()
            )  # bulk batches never steer the interactive limit or batch size
            if error is None:
                self.tuner.observe(len(ordered), real, ran)
            # per item, not per batch (a batch of one long text must not outweigh 30 titles)
            keep = 0.998 ** len(ordered)
            per_item = real / len(ordered)
            self.item_tokens = (
                per_item
                if not self.item_tokens
                else keep * self.item_tokens + (1 - keep) * per_item
            )
            # the limit never starves the batcher: two full batches of today's texts (at most
            # two token budgets, so long inputs cannot switch latency-based admission off)
            self.admission.floor_tokens = min(
                2 * self.cfg.max_batch_size * self.item_tokens, 2 * self.cfg.max_batch_tokens
            )
            self.admission.observe(max(started - it.enqueued for it in ordered), real, ran)
            self.waits.extend((started, started - it.enqueued) for it in ordered)
        self.metrics.batch_size.observe(len(ordered))
        self.metrics.batch_tokens.observe(padded)
        self.metrics.admission_limit.set(self.admission.limit)
        for it in ordered:
            self.metrics.queue.observe(started - it.enqueued)

    async def _infer(self, ordered: list[Item], padded: int, infer: list[int]) -> np.ndarray | None:
        """The backend call, timed into ``infer`` (ns): on the event loop for a lone query (see
        :meth:`_inline`; a failure there is retried), else on the inference thread."""
        if self._inline(ordered, padded) and (out := self._try_inline(ordered, infer)) is not None:
            return out
        model, encs = ordered[0].pending.model, [it.enc for it in ordered]

        def timed(run: Callable[[object, list[Encoded]], np.ndarray | None]) -> np.ndarray | None:
            infer[0] = time.time_ns()
            try:
                return run(model, encs)
            finally:
                infer[1] = time.time_ns()

        # a bulk batch runs on the model its job opened (no serving failover)
        run = _run_on_model if ordered[0].pending.bulk else self.run_batch
        self.running = True
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, timed, run)
        finally:
            self.running = False
        if (
            len(ordered) == 1
            and not ordered[0].pending.bulk
            and padded <= self.cfg.inline_max_tokens
        ):
            self._lone((infer[1] - infer[0]) / 1e6)  # a long lone text says nothing of a query
        return out

    def _try_inline(self, ordered: list[Item], infer: list[int]) -> np.ndarray | None:
        """The lone query run on the event loop, timed into ``infer`` (ns); None when the
        backend sends it to the thread or the run failed (a failing model stays off the loop)."""
        model = ordered[0].pending.model
        infer[0] = time.time_ns()
        try:
            out = self.run_inline(model, [it.enc for it in ordered])
        except Exception as exc:  # retried on the thread, which may fail over
            log.debug(
                "%s: inline run failed (%s); retrying on the inference thread", self.name, exc
            )
            self._no_inline = model  # a failing model runs on the thread from now on
            return None
        finally:
            infer[1] = time.time_ns()
        if out is None:  # this model's batches belong to the thread (e.g. a GPU context)
            self._no_inline = model
        else:
            self._lone((infer[1] - infer[0]) / 1e6)
        return out

    def _lone(self, ms: float) -> None:
        """A lone query's backend time into the EWMA the inline budget is held to."""
        self.lone_ms = ms if not self.lone_ms else 0.8 * self.lone_ms + 0.2 * ms

    def _inline(self, ordered: list[Item], padded: int) -> bool:
        """Run this batch on the event loop itself? Only a lone short interactive query, with
        nothing else queued or being tokenised and no two requests overlapping for
        INLINE_QUIET_S. At c=1 the hand-off to the inference thread and back (two thread
        wake-ups, a cache-cold core) cost 0.3-1.1 ms of a 4-5 ms query; under concurrency the
        loop must stay free to read and tokenise the next requests while a batch runs (the
        first overlap switches this off for INLINE_QUIET_S). A model whose lone queries take
        over INLINE_BUDGET_MS (a large model, a slow core) never runs on the loop, nor one
        whose inline run failed."""
        return (
            len(ordered) == 1
            and not ordered[0].pending.bulk
            and padded <= self.cfg.inline_max_tokens
            and self.lone_ms <= INLINE_BUDGET_MS
            and ordered[0].pending.model is not self._no_inline
            and not self.queue
            and not self.tokenising
            and not self.running  # the engine is the thread's (never two runs at once)
            and not self.releasing
            and time.monotonic() - self._overlap_at > INLINE_QUIET_S
        )

    def _deliver(
        self, ordered: list[Item], out: np.ndarray | None, error: Exception | None
    ) -> None:
        for j, it in enumerate(ordered):
            p = it.pending
            if p.future.done():
                continue
            if error is not None or out is None:
                self._release(p)
                p.future.set_exception(error or RuntimeError("batch produced no output"))
                continue
            p.results[it.index] = out[j]
            p.remaining -= 1
            if p.remaining == 0:
                self._release(p)
                p.future.set_result(p.results)

    def _idle(self) -> None:
        """Release memory once per quiet spell: ``idle_after_s`` after the last batch (a later
        batch moves the timer on; a busy queue leaves it to the end of the burst)."""
        self._idle_timer = None
        if self.queue or self.bulk or self._task is None:
            return
        left = self._quiet_since + self.idle_after_s - time.monotonic()
        loop = asyncio.get_running_loop()
        if left > 0 or self.running:  # a batch still on the thread: wait for the quiet after it
            self._idle_timer = loop.call_later(max(left, self.idle_after_s), self._idle)
            return
        self._released_after = self.batches
        self.releasing = True
        done = loop.run_in_executor(self._executor, self.on_idle)
        done.add_done_callback(self._released)

    def _released(self, _done: asyncio.Future) -> None:
        self.releasing = False


def _run_on_model(model: object, encs: list[Encoded]) -> np.ndarray:
    return model.run(encs)  # type: ignore[attr-defined]
