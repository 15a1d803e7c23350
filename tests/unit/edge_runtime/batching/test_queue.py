"""The batcher and admission with a fake backend (batching/HTTP logic in isolation)."""

import asyncio
import time

import numpy as np
import pytest

from artifacts.errors import DeadlineExceeded, Overloaded
from artifacts.textproc import Encoded
from edge_runtime.batching.admission import Admission
from edge_runtime.batching.queue import (
    ACCOUNT_AFTER_S,
    ACCOUNT_MAX_PENDING,
    INLINE_QUIET_S,
    Batcher,
)
from edge_runtime.config import BatchingSection
from edge_runtime.metrics import Metrics

# every test here waits for batches: a regression that loses a wake-up fails in seconds
pytestmark = pytest.mark.timeout(30)


def enc(n: int, tag: int = 0) -> Encoded:
    ids = np.full(n, tag, dtype=np.int64)
    return Encoded(ids=ids, type_ids=np.zeros(n, dtype=np.int64), truncated=False)


class FakeBackend:
    """Echoes each item's tag; records the batches it saw; optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    def __call__(self, _model: object, batch: list[Encoded]) -> np.ndarray:
        self.batches.append([len(e) for e in batch])
        if self.delay:
            time.sleep(self.delay)
        return np.array([[float(e.ids[0]), float(len(e))] for e in batch], dtype=np.float32)


def make(
    cfg: BatchingSection, backend: FakeBackend, adaptive: bool = False, inline: int = 0
) -> Batcher:
    """A batcher whose batches all run on the inference thread unless ``inline`` (a slow
    fake backend run on the event loop would block the test's own timing)."""
    cfg.adaptive = adaptive
    cfg.inline_max_tokens = inline
    return Batcher("m", cfg, backend, Metrics())


def far() -> float:
    return time.monotonic() + 30


def test_results_come_back_in_order_and_batched():
    async def main():
        backend = FakeBackend(delay=0.01)
        b = make(BatchingSection(max_batch_size=8, max_batch_tokens=1000, max_wait_ms=0), backend)
        b.start()
        reqs = [b.submit([enc(3 + i % 5, tag=i)], far()) for i in range(20)]
        outs = await asyncio.gather(*reqs)
        await b.stop()
        assert [int(o[0][0]) for o in outs] == list(range(20))
        assert all(len(x) <= 8 for x in backend.batches)
        assert (
            len(backend.batches) < 20
        )  # requests arriving while a batch runs are batched together
        multi = make(BatchingSection(max_batch_size=4), FakeBackend())
        multi.start()
        out = await multi.submit([enc(2, tag=t) for t in (7, 8, 9, 10, 11)], far())
        await multi.stop()
        assert [int(r[0]) for r in out] == [7, 8, 9, 10, 11]

    asyncio.run(main())


def test_token_budget_and_length_grouping():
    async def main():
        backend = FakeBackend(delay=0.05)
        b = make(BatchingSection(max_batch_size=64, max_batch_tokens=40, max_wait_ms=0), backend)
        b.start()
        first = asyncio.ensure_future(b.submit([enc(4)], far()))  # occupies the backend
        await asyncio.sleep(0.01)
        lengths = [2, 30, 3, 31, 2, 29, 3]
        outs = await asyncio.gather(first, *[b.submit([enc(n)], far()) for n in lengths])
        await b.stop()
        assert len(outs) == 8
        for batch in backend.batches:
            assert max(batch) * len(batch) <= 40 or len(batch) == 1
        later = backend.batches[1:]
        # short items ran together, long ones separately: no short item padded to 30 tokens
        assert any(sorted(x) == [2, 2, 3, 3] for x in later)

    asyncio.run(main())


def test_no_artificial_wait_when_idle():
    async def main():
        b = make(BatchingSection(max_wait_ms=200), FakeBackend())
        b.start()
        t0 = time.perf_counter()
        await b.submit([enc(5)], far())
        dt = time.perf_counter() - t0
        await b.stop()
        assert dt < 0.1  # did not wait max_wait_ms: nothing else was being tokenised

    asyncio.run(main())


def test_deadline_exceeded_is_504_and_skipped():
    async def main():
        backend = FakeBackend(delay=0.2)
        b = make(BatchingSection(max_batch_size=1, max_wait_ms=0), backend)
        b.start()
        blocker = asyncio.ensure_future(b.submit([enc(3)], far()))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await b.submit([enc(3)], time.monotonic() + 0.05)
        await blocker
        await asyncio.sleep(0.3)
        await b.stop()
        assert len(backend.batches) == 1  # the expired request never reached the backend
        assert b.admission.queued_tokens == 0

    asyncio.run(main())


def test_cancelled_requests_are_skipped():
    async def main():
        backend = FakeBackend(delay=0.1)
        b = make(BatchingSection(max_batch_size=1, max_wait_ms=0), backend)
        b.start()
        blocker = asyncio.ensure_future(b.submit([enc(3)], far()))
        await asyncio.sleep(0.02)
        doomed = asyncio.ensure_future(b.submit([enc(3, tag=5)], far()))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await blocker
        await asyncio.sleep(0.2)
        await b.stop()
        assert len(backend.batches) == 1

    asyncio.run(main())


def test_overload_is_429_with_retry_after_and_memory_bounded():
    async def main():
        backend = FakeBackend(delay=0.05)
        cfg = BatchingSection(
            max_batch_size=4, max_batch_tokens=40, max_queued_tokens=60, max_wait_ms=0
        )
        b = make(cfg, backend)
        b.start()
        results = await asyncio.gather(
            *[b.submit([enc(10)], far()) for _ in range(30)], return_exceptions=True
        )
        await b.stop()
        rejected = [r for r in results if isinstance(r, Overloaded)]
        assert rejected and all(r.retry_after_s >= 1 for r in rejected)
        assert len([r for r in results if not isinstance(r, Exception)]) >= 6
        assert b.admission.queued_tokens == 0

    asyncio.run(main())


def test_adaptive_limit_shrinks_when_queueing_exceeds_target_and_recovers():
    adm = Admission(
        max_queued_tokens=10_000, batch_tokens=1000, latency_target_s=0.05, adaptive=True
    )
    assert adm.limit == 4000  # starts at four batches, not at the maximum
    adm.observe(waited_s=0.1, batch_tokens=1000, run_s=0.1)
    assert adm.limit >= 4000  # waiting for one running batch is pipelining, not backlog
    adm = Admission(
        max_queued_tokens=10_000, batch_tokens=1000, latency_target_s=0.05, adaptive=True
    )
    adm.observe(waited_s=0.3, batch_tokens=1000, run_s=0.1)
    # x0.8, within Little's law: drain x (target + batch) x 2, the target read as at least one
    # batch time (a 50 ms target cannot be met by 100 ms batches)
    assert adm.limit == pytest.approx(min(4000 * 0.8, 2 * 10_000 * (max(0.05, 0.1) + 0.1)))
    for _ in range(20):
        adm.observe(waited_s=0.3, batch_tokens=1000, run_s=0.1)
    assert adm.limit == 250  # kept shrinking while over target, down to the floor (a quarter batch)
    assert adm.drain_tokens_per_s == pytest.approx(10_000, rel=0.01)
    adm.queued_tokens = 900
    assert adm.try_admit(200) == 1.0  # 900 / 10000 tokens/s rounds up to 1 s
    for _ in range(200):  # the load stays (the queue fills what the limit allows): it recovers
        adm.peak_queued = int(adm.limit)
        adm.observe(waited_s=0.001, batch_tokens=1000, run_s=0.1)
    assert adm.limit == 10_000
    fixed = Admission(
        max_queued_tokens=500, batch_tokens=100, latency_target_s=0.05, adaptive=False
    )
    fixed.observe(waited_s=5, batch_tokens=100, run_s=1)
    assert fixed.try_admit(400) is None and fixed.try_admit(200) is not None


def test_size_tuner_learns_the_efficient_batch_size():
    from edge_runtime.batching.tuner import SizeTuner

    t = SizeTuner(64, explore_every=8)
    assert t.cap() == 64  # nothing measured yet
    for _ in range(5):
        t.observe(16, 16 * 30, 0.040)  # 12,000 tokens/s at 16
        t.observe(64, 64 * 30, 0.240)  # 8,000 tokens/s at 64
        t.observe(4, 4 * 30, 0.020)  # 6,000 tokens/s at 4
    caps = [t.cap() for _ in range(16)]
    assert caps.count(16) == 14 and caps.count(64) == 2  # exploit, explore every 8th
    assert SizeTuner.bucket(9) == 16 and SizeTuner.bucket(16) == 16 and SizeTuner.bucket(1) == 1


def test_idle_callback_runs_once_per_quiet_spell_on_the_inference_thread():
    import threading

    async def main():
        backend = FakeBackend()
        calls: list[str] = []
        cfg = BatchingSection(max_wait_ms=0, release_after_idle_ms=200)
        b = Batcher(
            "m",
            cfg,
            backend,
            Metrics(),
            on_idle=lambda: calls.append(threading.current_thread().name),
        )
        b.start()
        for i in range(5):  # a burst with short gaps: no release in between
            await b.submit([enc(4, tag=i)], far())
            await asyncio.sleep(0.02)
        assert calls == []
        await asyncio.sleep(0.4)
        assert len(calls) == 1 and calls[0].startswith("infer-m")
        await asyncio.sleep(0.4)  # still quiet: nothing more to release
        assert len(calls) == 1
        await b.submit([enc(4)], far())
        await asyncio.sleep(0.4)
        assert len(calls) == 2
        await b.stop()

    asyncio.run(main())


def test_a_batch_holds_items_of_one_pinned_model_only():
    """Requests pinned to different models (a hot swap between them) never share a batch,
    and each batch runs on the model its requests were admitted under."""
    seen: list[tuple[object, int]] = []

    def backend(model, batch):
        seen.append((model, len(batch)))
        time.sleep(0.01)
        return np.array([[float(model), float(len(e))] for e in batch], dtype=np.float32)

    async def main():
        b = Batcher("m", BatchingSection(max_batch_size=64, max_wait_ms=0), backend, Metrics())
        b.start()
        reqs = [b.submit([enc(4, tag=i), enc(5, tag=i)], far(), model=i % 2) for i in range(20)]
        outs = await asyncio.gather(*reqs)
        await b.stop()
        for i, out in enumerate(outs):
            assert [int(row[0]) for row in out] == [i % 2, i % 2]  # one version per response
        assert len(seen) < 20  # still batched

    asyncio.run(main())


class PinnedModel:
    """A bulk job's model: the bulk lane calls its ``run`` directly (fake, records batches)."""

    def __init__(self, log: list, delay: float = 0.0) -> None:
        self.log, self.delay = log, delay

    def run(self, batch: list[Encoded]) -> np.ndarray:
        self.log.append(("bulk", len(batch), max(len(e) for e in batch)))
        if self.delay:
            time.sleep(self.delay)
        return np.array([[float(e.ids[0]), float(len(e))] for e in batch], dtype=np.float32)


def test_bulk_runs_only_when_no_interactive_item_waits_and_in_small_batches():
    async def main():
        log: list = []

        def interactive(_model, batch):
            log.append(("interactive", len(batch), max(len(e) for e in batch)))
            time.sleep(0.02)
            return np.array([[float(e.ids[0]), 0.0] for e in batch], dtype=np.float32)

        cfg = BatchingSection(
            max_batch_size=64,
            max_wait_ms=0,
            bulk_max_batch_tokens=40,
            inline_max_tokens=0,  # the blocker runs on the inference thread
        )
        b = Batcher("m", cfg, interactive, Metrics())
        b.start()
        model = PinnedModel(log, delay=0.02)
        blocker = asyncio.ensure_future(b.submit([enc(4, tag=99)], far()))
        await asyncio.sleep(0.005)  # the backend is busy: everything below queues
        bulk = asyncio.ensure_future(
            b.submit_bulk([enc(10, tag=i) for i in range(12)], far(), model)
        )
        await asyncio.sleep(0)
        inter = [asyncio.ensure_future(b.submit([enc(5, tag=t)], far())) for t in (1, 2, 3)]
        outs = await asyncio.gather(blocker, *inter)
        bulk_out = await bulk
        await b.stop()
        assert [int(o[0][0]) for o in outs] == [99, 1, 2, 3]
        assert [int(r[0]) for r in bulk_out] == list(range(12))  # in order, on the pinned model
        kinds = [k for k, _, _ in log]
        first_bulk = kinds.index("bulk")
        assert "interactive" not in kinds[first_bulk:]  # queued interactive work went first
        assert all(n * longest <= 40 for k, n, longest in log if k == "bulk")
        assert b.bulk_tokens == 0 and b.admission.queued_tokens == 0
        assert len(b.waits) == 4  # only interactive items feed the p99 signal
        assert b.interactive_wait_p99_ms() > 0
        b.waits = type(b.waits)((t - 60, w) for t, w in b.waits)
        assert b.interactive_wait_p99_ms() == 0  # only the last 10 s count

    asyncio.run(main())


def test_bulk_is_refused_while_interactive_admission_is_past_half():
    async def main():
        cfg = BatchingSection(max_batch_size=4, max_batch_tokens=64, max_queued_tokens=64)
        b = Batcher("m", cfg, FakeBackend(), Metrics())  # not started: nothing drains
        b.admission.queued_tokens = 40  # over half of the 64-token limit
        with pytest.raises(Overloaded, match="bulk work waits"):
            await b.submit_bulk([enc(3)], far(), PinnedModel([]))
        b.admission.queued_tokens = 0
        cfg.bulk_max_queued_tokens = 10
        first = asyncio.ensure_future(b.submit_bulk([enc(8)], far(), PinnedModel([])))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit_bulk([enc(8)], far(), PinnedModel([]))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert b.bulk_tokens == 0  # a cancelled bulk request gives its tokens back

    asyncio.run(main())


def _queued(b: Batcher, lengths: list[int]) -> None:
    """Put items straight into the interactive lane (no loop running: pure batch formation)."""
    from edge_runtime.batching.queue import Item, Pending

    loop = asyncio.new_event_loop()
    try:
        for n in lengths:
            p = Pending(size=1, deadline=far(), future=loop.create_future(), tokens=n)
            b.queue.append(Item(p, 0, enc(n), time.monotonic()))
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("max_padding", "first"),
    [
        (0.1, [300]),  # the long description runs alone; no title is padded to 300 tokens
        (0.99, [300, 30, 31, 29, 32, 30]),  # no cap: the titles are padded into its batch
    ],
)
def test_a_long_text_is_not_padded_together_with_titles(max_padding, first):
    b = make(BatchingSection(max_batch_size=64, max_padding=max_padding), FakeBackend())
    _queued(b, [300, 30, 31, 29, 32, 30])  # the long one is the oldest: it anchors the batch
    assert sorted(len(it.enc) for it in b._take()) == sorted(first)
    if max_padding < 0.5:  # the titles form the next batch together
        assert sorted(len(it.enc) for it in b._take()) == [29, 30, 30, 31, 32]


def test_padding_under_the_floor_is_always_accepted():
    # 4 items of 3 tokens and one of 20: 17 tokens of padding each (68 in all, over the floor
    # of 64) vs 3 + 17 = 20: the fifth joins only while the waste stays under 64 tokens
    b = make(BatchingSection(max_batch_size=64, max_padding=0.0), FakeBackend())
    _queued(b, [3, 3, 3, 20])
    assert sorted(len(it.enc) for it in b._take()) == [3, 3, 3, 20]  # 80 - 29 = 51 <= 64
    _queued(b, [3, 3, 3, 3, 3, 20])
    assert sorted(len(it.enc) for it in b._take()) == [3, 3, 3, 3, 3]  # 120 - 35 = 85 > 64


def test_the_admission_floor_follows_the_texts_arriving():
    async def main():
        b = make(BatchingSection(max_batch_size=8, max_wait_ms=0), FakeBackend(), adaptive=True)
        b.start()
        await asyncio.gather(*[b.submit([enc(40)], far()) for _ in range(16)])
        floor_long = b.admission.floor_tokens
        for _ in range(100):
            await asyncio.gather(*[b.submit([enc(4)], far()) for _ in range(8)])
        await b.stop()
        assert floor_long == pytest.approx(2 * 8 * 40)  # two full batches of 40-token texts
        assert b.item_tokens < 20 and b.admission.floor_tokens == pytest.approx(
            2 * 8 * b.item_tokens
        )  # moved towards the short texts, per item (not per batch)

    asyncio.run(main())


def test_the_tuner_ranks_sizes_by_real_tokens_not_padding():
    from edge_runtime.batching.tuner import SizeTuner

    t = SizeTuner(64, explore_every=1000)
    for _ in range(5):
        t.observe(8, 8 * 30, 0.020)  # 12,000 real tokens/s
        t.observe(32, 32 * 10, 0.040)  # 8,000 real tokens/s (its padded rate would look better)
    assert t.best() == 8 and t.cap() == 8


def test_the_admission_floor_is_at_most_two_token_budgets():
    async def main():
        cfg = BatchingSection(max_batch_size=64, max_batch_tokens=1000, max_wait_ms=0)
        b = make(cfg, FakeBackend(), adaptive=True)
        b.start()
        await asyncio.gather(*[b.submit([enc(500)], far()) for _ in range(4)])
        await b.stop()
        assert b.item_tokens == pytest.approx(500)
        assert b.admission.floor_tokens == 2000  # not 2 x 64 x 500: long inputs keep AIMD on

    asyncio.run(main())


class ThreadRecorder(FakeBackend):
    """Records which thread ran each batch."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.threads: list[str] = []

    def __call__(self, model: object, batch: list[Encoded]) -> np.ndarray:
        import threading

        self.threads.append(threading.current_thread().name)
        return super().__call__(model, batch)


def test_a_lone_short_query_runs_on_the_event_loop_while_requests_do_not_overlap():
    import threading

    async def main():
        backend = ThreadRecorder()
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        loop_thread = threading.current_thread().name
        for i in range(3):  # c=1: one after another
            out = await b.submit([enc(5, tag=i)], far())
            assert int(out[0][0]) == i
        await b.submit([enc(40)], far())  # longer than inline_max_tokens: the inference thread
        await b.stop()
        assert backend.threads[:3] == [loop_thread] * 3
        assert backend.threads[3].startswith("infer-m")
        assert b.admission.queued_tokens == 0 and b.batches == 4

    asyncio.run(main())


def test_a_lone_query_runs_on_its_own_task_and_is_accounted_as_a_batch():
    """No hop to the batcher's task and back at c=1: the caller's task runs the query; the
    batch is counted (batches, tuner, admission, metrics) as one from the queue would be."""
    tasks: list[str] = []

    def backend(_model: object, batch: list[Encoded]) -> np.ndarray:
        current = asyncio.current_task()
        tasks.append(current.get_name() if current else "-")
        return np.array([[float(e.ids[0])] for e in batch], dtype=np.float32)

    async def main():
        metrics = Metrics()
        cfg = BatchingSection(max_wait_ms=0, inline_max_tokens=16)
        b = Batcher("m", cfg, backend, metrics)
        b.start()
        for i in range(3):
            request = asyncio.create_task(b.submit([enc(5, tag=i)], far()), name=f"request-{i}")
            assert int((await request)[0][0]) == i
        await b.stop()
        assert tasks == ["request-0", "request-1", "request-2"]
        assert b.batches == 3 and b.admission.queued_tokens == 0 and b.lone_ms > 0
        assert len(b.waits) == 3 and b.item_tokens == 5
        assert 'shipyard_batch_size_count{model="m"} 3.0' in metrics.render().decode()

    asyncio.run(main())


def test_a_lone_query_is_answered_before_its_batch_is_accounted():
    """The inline run answers first: the caller resumes with its result and its tokens freed,
    while the accounting (tuner, admission, metrics) waits — for ACCOUNT_AFTER_S, for a
    scrape of the metrics, or for ACCOUNT_MAX_PENDING calls — off the queries' path. A
    traced query gets its batch timing at once (its caller reads it next)."""

    async def main():
        metrics = Metrics()
        cfg = BatchingSection(max_wait_ms=0, inline_max_tokens=16)
        b = Batcher("m", cfg, FakeBackend(), metrics)
        b.start()
        count = 'shipyard_batch_size_count{model="m"}'
        out = await b.submit([enc(5, tag=7)], far())
        assert int(out[0][0]) == 7
        assert b.batches == 1 and b.admission.queued_tokens == 0
        assert len(b.waits) == 0 and b.item_tokens == 0  # not yet accounted
        await asyncio.sleep(0)
        assert len(b.waits) == 0
        assert f"{count} 1.0" in metrics.render().decode()  # a scrape sees every answer
        assert len(b.waits) == 1 and b.item_tokens == 5 and b._idle_timer is not None
        await b.submit([enc(6, tag=8)], far())
        assert len(b.waits) == 1
        await asyncio.sleep(ACCOUNT_AFTER_S * 3)  # or, at most, ACCOUNT_AFTER_S later
        assert len(b.waits) == 2
        timings: list = []
        await b.submit([enc(6, tag=9)], far(), timings=timings)
        assert len(timings) == 1 and timings[0].size == 1 and timings[0].padded_tokens == 6
        assert len(b.waits) == 3  # traced: accounted before the answer, as a queued batch is
        ran: list[int] = []
        for i in range(ACCOUNT_MAX_PENDING):
            b.later(ran.append, i)
        assert ran == list(range(ACCOUNT_MAX_PENDING))  # never more than this many wait
        b.later(ran.append, -1)
        await b.stop()  # stopping runs what waits
        assert ran[-1] == -1
        assert f"{count} 3.0" in metrics.render().decode()

    asyncio.run(main())


def test_put_off_accounting_lands_as_soon_as_requests_overlap():
    """Lone queries' accounting waits; the first overlap runs it — before the overlapping
    requests' batch is accounted, while only they are queued — so admission and the tuner learn
    in order (a flood must not be judged by a quiet spell's samples taken once it filled the
    queue, when "queue in use, no wait" would raise the limit)."""

    async def main():
        b = make(BatchingSection(max_wait_ms=0), FakeBackend(), inline=16)
        b.start()
        for i in range(2):
            await b.submit([enc(5, tag=i)], far())
        assert len(b.waits) == 0 and len(b._later) == 2  # put off
        queued_at_observe: list[int] = []
        observe = b.admission.observe

        def recorded(*args):
            queued_at_observe.append(b.admission.queued_tokens)
            return observe(*args)

        b.admission.observe = recorded
        # three at once: the first runs on the loop (nothing else had arrived), the second sees
        # the overlap and the put-off accounting (three runs) lands before it is queued
        await asyncio.gather(*(b.submit([enc(5, tag=9)], far()) for _ in range(3)))
        starts = [t for t, _ in b.waits]
        assert len(starts) == 5 and starts == sorted(starts)  # in the order they ran
        assert queued_at_observe[:3] == [5, 5, 5]  # with only the overlapping request queued
        await b.stop()

    asyncio.run(main())


def test_queued_tokens_are_read_when_scraped():
    """``shipyard_queued_tokens`` is the admission's count at scrape time (not set twice
    per request on its path)."""

    async def main():
        metrics = Metrics()
        cfg = BatchingSection(max_wait_ms=0)
        cfg.inline_max_tokens = 0
        b = Batcher("m", cfg, FakeBackend(delay=0.3), metrics)
        b.start()
        first = asyncio.create_task(b.submit([enc(5)], far()))
        await asyncio.sleep(0.05)  # the first batch is running on the thread
        second = asyncio.create_task(b.submit([enc(7), enc(9)], far()))
        await asyncio.sleep(0.05)
        assert 'shipyard_queued_tokens{model="m"} 21.0' in metrics.render().decode()
        await asyncio.gather(first, second)
        assert 'shipyard_queued_tokens{model="m"} 0.0' in metrics.render().decode()
        await b.stop()

    asyncio.run(main())


def test_a_lone_inline_query_is_answered_within_its_loop_step():
    """No yield on the c=1 path: a lone query is run and answered before the event loop runs
    anything else (a callback scheduled before it is still waiting afterwards)."""

    async def main():
        b = make(BatchingSection(max_wait_ms=0), ThreadRecorder(), inline=16)
        b.start()
        ran: list[int] = []
        asyncio.get_running_loop().call_soon(ran.append, 1)
        out = await b.submit([enc(5, tag=3)], far())
        assert int(out[0][0]) == 3 and ran == [] and b.batches == 1
        await b.stop()

    asyncio.run(main())


def test_a_request_ready_while_another_task_ran_inline_queues_as_an_overlap():
    """Two requests ready in the same loop step (a burst read at once): the first runs on the
    loop; the second, whose task waited meanwhile, sees that run's mark before the loop's next
    step and queues for the inference thread, switching inline runs off for a quiet spell."""
    import threading

    async def main():
        backend = ThreadRecorder()
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        first = asyncio.create_task(b.submit([enc(5, tag=1)], far()))
        second = asyncio.create_task(b.submit([enc(5, tag=2)], far()))
        outs = await asyncio.gather(first, second)
        assert [int(o[0][0]) for o in outs] == [1, 2]
        assert backend.threads[0] == threading.current_thread().name
        assert backend.threads[1].startswith("infer-m")
        assert time.monotonic() - b._overlap_at < INLINE_QUIET_S
        assert b.admission.queued_tokens == 0 and b.batches == 2
        assert b._inline_task is None  # the mark lasts until the loop's next step
        await b.stop()

    asyncio.run(main())


def test_overlapping_requests_switch_inline_runs_off_for_a_quiet_spell(monkeypatch):
    import edge_runtime.batching.queue as queue

    monkeypatch.setattr(queue, "INLINE_QUIET_S", 0.3)

    async def main():
        backend = ThreadRecorder(delay=0.005)  # within INLINE_BUDGET_MS
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        # several at once: one runs, the rest queue behind it (an overlap)
        await asyncio.gather(*[b.submit([enc(5, tag=i)], far()) for i in range(4)])
        backend.threads.clear()
        await b.submit([enc(5)], far())  # lone, but right after the overlap: a thread hop
        assert backend.threads[-1].startswith("infer-m")
        await asyncio.sleep(0.35)  # quiet again: back on the event loop
        await b.submit([enc(5)], far())
        assert not backend.threads[-1].startswith("infer-m")
        await b.stop()

    asyncio.run(main())


def test_inline_off_every_batch_runs_on_the_inference_thread():
    async def main():
        backend = ThreadRecorder()
        b = make(BatchingSection(max_wait_ms=0), backend, inline=0)
        b.start()
        for _ in range(3):
            await b.submit([enc(2)], far())
        await b.stop()
        assert all(t.startswith("infer-m") for t in backend.threads)

    asyncio.run(main())


def failing_inline(backend: FakeBackend, tried: list[str]) -> Batcher:
    """A batcher whose every run on the event loop fails (recording the thread it ran on)."""
    import threading

    def inline(_model, _batch):
        tried.append(threading.current_thread().name)
        raise RuntimeError("engine fault")

    cfg = BatchingSection(max_wait_ms=0, inline_max_tokens=16)
    return Batcher("m", cfg, backend, Metrics(), run_inline=inline)


def test_a_failed_inline_run_is_retried_on_the_inference_thread():
    """The event loop never fails over (that may open another backend): it hands the batch to
    the inference thread, whose run_batch does."""
    import threading

    async def main():
        tried: list[str] = []
        backend = ThreadRecorder()
        b = failing_inline(backend, tried)
        b.start()
        out = await b.submit([enc(5, tag=7)], far())
        await b.stop()
        assert int(out[0][0]) == 7
        assert tried == [threading.current_thread().name]  # on the loop, once
        assert len(backend.threads) == 1 and backend.threads[0].startswith("infer-m")

    asyncio.run(main())


def test_run_inline_may_send_a_batch_to_the_inference_thread():
    """None from run_inline (e.g. a GPU backend, whose context belongs to the thread)."""

    async def main():
        backend = ThreadRecorder()
        cfg = BatchingSection(max_wait_ms=0, inline_max_tokens=16)
        asked: list[object] = []
        b = Batcher("m", cfg, backend, Metrics(), run_inline=lambda m, _b: asked.append(m))
        b.start()
        out = await b.submit([enc(5, tag=3)], far())
        assert int(out[0][0]) == 3
        assert backend.threads and backend.threads[0].startswith("infer-m")
        for i in range(3):  # a model that declined is not asked again
            assert int((await b.submit([enc(5, tag=i)], far()))[0][0]) == i
        await b.stop()
        assert asked == [None] and len(backend.threads) == 4

    asyncio.run(main())


def test_no_inline_run_while_memory_is_being_released_on_the_thread():
    """on_idle (an arena shrink run) may use the same engine: a query arriving meanwhile
    waits for the thread instead of running beside it on the event loop."""
    import threading

    async def main():
        backend = ThreadRecorder()
        released = threading.Event()
        releases: list[int] = []

        def slow_release():
            time.sleep(0.3)
            releases.append(1)
            released.set()

        cfg = BatchingSection(max_wait_ms=0, inline_max_tokens=16, release_after_idle_ms=50)
        b = Batcher("m", cfg, backend, Metrics(), on_idle=slow_release)
        b.start()
        await b.submit([enc(5)], far())  # inline: nothing overlapped yet
        await asyncio.sleep(0.15)  # the release is running on the thread now
        assert b.releasing and not released.is_set()
        await b.submit([enc(5)], far())
        assert released.is_set()  # it waited for the release, on the same thread
        assert backend.threads[-1].startswith("infer-m")
        await asyncio.sleep(0.5)  # that batch's quiet spell: one more release, then none
        assert not b.releasing and len(releases) == 2
        await b.stop()

    asyncio.run(main())


def test_a_model_slower_than_the_inline_budget_runs_on_the_thread():
    """The loop is blocked while a query runs on it: a lone query that took over
    INLINE_BUDGET_MS (a large model, a slow core) sends the next ones to the thread."""
    from edge_runtime.batching.queue import INLINE_BUDGET_MS

    async def main():
        backend = ThreadRecorder(delay=2 * INLINE_BUDGET_MS / 1000)
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        for _ in range(3):
            await b.submit([enc(5)], far())
        await b.stop()
        assert not backend.threads[0].startswith("infer-m")  # measured once on the loop
        assert all(t.startswith("infer-m") for t in backend.threads[1:])
        assert b.lone_ms > INLINE_BUDGET_MS

    asyncio.run(main())


def test_after_a_failed_inline_run_that_model_stays_on_the_thread():
    async def main():
        tried: list[str] = []
        backend = ThreadRecorder()
        b = failing_inline(backend, tried)
        b.start()
        for _ in range(3):
            await b.submit([enc(5)], far(), model="pinned")
        await b.submit([enc(5)], far(), model="another")  # a new model may run inline again
        await b.stop()
        assert len(tried) == 2  # once per model
        assert len(backend.threads) == 4

    asyncio.run(main())


def test_a_long_lone_text_does_not_count_against_the_inline_budget():
    """A 40-token text run alone on the thread (slow) must not send the next short queries
    there: the budget is held to lone queries that could have run inline."""
    from edge_runtime.batching.queue import INLINE_BUDGET_MS

    class SlowWhenLong(ThreadRecorder):
        def __call__(self, model, batch):
            self.delay = 2 * INLINE_BUDGET_MS / 1000 if len(batch[0]) > 16 else 0.0
            return super().__call__(model, batch)

    async def main():
        backend = SlowWhenLong()
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        await b.submit([enc(40)], far())  # too long for the loop: the thread, slowly
        await b.submit([enc(5)], far())
        await b.stop()
        assert backend.threads[0].startswith("infer-m")
        assert not backend.threads[1].startswith("infer-m")
        assert b.lone_ms < INLINE_BUDGET_MS

    asyncio.run(main())


def test_a_lone_query_past_its_deadline_is_refused_not_run():
    async def main():
        backend = ThreadRecorder()
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        with pytest.raises(DeadlineExceeded):
            await b.submit([enc(5)], time.monotonic() - 0.001)
        await b.stop()
        assert backend.batches == [] and b.admission.queued_tokens == 0

    asyncio.run(main())


def test_requests_ready_together_are_batched_not_run_one_by_one_on_the_loop():
    """Requests ready at the same moment overlap: they are batched on the inference thread,
    not run one after another on the event loop (the inline run is for c=1 only)."""

    async def main():
        backend = ThreadRecorder(delay=0.002)
        b = make(BatchingSection(max_wait_ms=0), backend, inline=16)
        b.start()
        await asyncio.gather(*[b.submit([enc(5, tag=i)], far()) for i in range(8)])
        assert max(len(batch) for batch in backend.batches) > 1
        assert all(t.startswith("infer-m") for t in backend.threads[1:])
        await b.stop()

    asyncio.run(main())
