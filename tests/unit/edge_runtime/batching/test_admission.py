"""Admission arithmetic, exactly: who is admitted at the limit, the Retry-After, the EWMAs,
the multiplicative decrease with its Little's-law clamp and floor, the additive increase and
its ceiling. Pure and synchronous: a regression fails here in milliseconds, never hangs."""

from __future__ import annotations

import pytest

from edge_runtime.batching.admission import Admission
from edge_runtime.config import BatchingSection


def adm(**kw) -> Admission:
    base = {"max_queued_tokens": 10_000, "batch_tokens": 1000, "latency_target_s": 0.05}
    return Admission(**{**base, **kw})


def test_the_limit_starts_at_four_batches_capped_by_the_maximum():
    assert adm().limit == 4000.0
    assert adm(max_queued_tokens=3000).limit == 3000.0
    assert adm(adaptive=False).limit == 10_000.0


def test_from_config_reads_the_batching_section():
    cfg = BatchingSection(max_queued_tokens=9000, max_batch_tokens=500, latency_target_ms=20)
    a = Admission.from_config(cfg)
    assert (a.max_queued_tokens, a.batch_tokens, a.latency_target_s, a.adaptive) == (
        9000, 500, 0.02, True,
    )  # fmt: skip


def test_admission_up_to_the_limit_inclusive_then_429():
    a = adm()
    assert a.try_admit(3000) is None and a.queued_tokens == 3000
    assert a.try_admit(1000) is None and a.queued_tokens == 4000  # exactly at the limit
    assert a.try_admit(1) == 1.0  # no drain measured yet: retry after a second
    assert a.rejected == 1 and a.queued_tokens == 4000


def test_an_oversized_request_is_admitted_when_the_queue_is_empty():
    a = adm()
    assert a.try_admit(50_000) is None  # otherwise it could never run at all
    assert a.try_admit(1) is not None


def test_a_fixed_limit_ignores_the_adaptive_one():
    a = adm(adaptive=False)
    a.limit = 10.0  # not consulted
    assert a.try_admit(9000) is None and a.try_admit(1000) is None
    assert a.try_admit(1) is not None


def test_release_never_goes_negative():
    a = adm()
    a.try_admit(100)
    a.release(60)
    assert a.queued_tokens == 40
    a.release(1000)
    assert a.queued_tokens == 0


@pytest.mark.parametrize(
    ("queued", "rate", "after"),
    [(0, 0.0, 1.0), (5000, 1000.0, 5.0), (5001, 1000.0, 6.0), (10, 1000.0, 1.0)],
)
def test_retry_after_is_the_backlog_over_the_drain_rate_rounded_up(queued, rate, after):
    a = adm()
    a.queued_tokens, a.drain_tokens_per_s = queued, rate
    assert a.retry_after() == after


def test_the_first_observation_seeds_the_ewmas_then_they_smooth():
    a = adm()
    a.observe(waited_s=0.03, batch_tokens=1000, run_s=0.01)
    assert a.run_ewma_s == 0.01
    assert a.delay_ewma_s == pytest.approx(0.02)  # waiting beyond one batch's service time
    assert a.drain_tokens_per_s == pytest.approx(100_000)
    a.observe(waited_s=0.01, batch_tokens=500, run_s=0.02)
    assert a.run_ewma_s == pytest.approx(0.8 * 0.01 + 0.2 * 0.02)
    excess = 0.01 - a.run_ewma_s
    assert a.delay_ewma_s == pytest.approx(0.8 * 0.02 + 0.2 * max(0.0, excess))
    assert a.drain_tokens_per_s == pytest.approx(0.8 * 100_000 + 0.2 * 25_000)


def test_a_zero_run_time_leaves_the_drain_rate_alone():
    a = adm()
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.0)
    assert a.drain_tokens_per_s == 0.0


def test_delay_over_the_target_shrinks_by_a_fifth_within_littles_law():
    a = adm()
    a.drain_tokens_per_s = 1_000_000.0  # Little's law allows far more: x0.8 applies
    a.run_ewma_s = 0.01
    a.observe(waited_s=0.2, batch_tokens=10_000, run_s=0.01)
    assert a.limit == pytest.approx(4000 * 0.8)


def test_the_shrink_is_clamped_by_littles_law_and_floored_at_a_quarter_batch():
    a = adm()
    a.observe(waited_s=1.0, batch_tokens=100, run_s=0.01)  # drain 10k tokens/s
    little = 2 * a.drain_tokens_per_s * (a.latency_target_s + a.run_ewma_s)
    assert a.limit == pytest.approx(max(250.0, min(4000 * 0.8, little)))
    assert a.limit == pytest.approx(1200.0)
    for _ in range(50):
        a.observe(waited_s=5.0, batch_tokens=1, run_s=1.0)  # drain collapses
    assert a.limit == 250.0  # a quarter batch, never less
    tiny = adm(batch_tokens=2)
    for _ in range(50):
        tiny.observe(waited_s=5.0, batch_tokens=1, run_s=1.0)
    assert tiny.limit == 1.0  # and never below one token


def test_without_a_drain_rate_the_shrink_is_plain_multiplicative():
    a = adm()
    a.delay_ewma_s = 1.0
    a.observe(waited_s=1.0, batch_tokens=0, run_s=0.0)
    assert a.limit == pytest.approx(3200.0)


def test_delay_under_half_the_target_grows_a_tenth_of_a_batch_up_to_the_maximum():
    a = adm(max_queued_tokens=4150)
    a.peak_queued = 2000  # the queue reached half the limit: it is in use
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)
    assert a.limit == pytest.approx(4100.0)
    a.peak_queued = 2050
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)
    assert a.limit == 4150.0


def test_a_limit_not_in_use_does_not_grow_however_short_the_delays():
    """A quiet node (c=1: one small request at a time) must not inflate its limit, or the
    flood that comes next is admitted seconds of backlog."""
    a = adm()
    for _ in range(1000):
        assert a.try_admit(12) is None
        a.release(12)
        a.observe(waited_s=0.0, batch_tokens=12, run_s=0.002)
    assert a.limit == 4000.0


def test_the_queue_reaching_half_the_limit_or_a_refusal_lets_it_grow():
    a = adm()
    assert a.try_admit(1999) is None  # under half the limit
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)
    assert a.limit == 4000.0
    assert a.try_admit(1) is None  # 2000 queued: half the limit
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)
    assert a.limit == pytest.approx(4100.0)
    a.release(2000)
    assert a.try_admit(3000) is None
    assert a.try_admit(1200) is not None  # refused: the limit was the constraint
    a.release(3000)
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)
    assert a.limit == pytest.approx(4200.0)
    a.observe(waited_s=0.0, batch_tokens=1000, run_s=0.001)  # nothing since: no growth
    assert a.limit == pytest.approx(4200.0)


def test_between_half_and_the_whole_target_the_limit_holds():
    a = adm()
    a.run_ewma_s = 0.001
    a.delay_ewma_s = 0.03
    a.observe(waited_s=0.031, batch_tokens=1000, run_s=0.001)
    assert 0.025 <= a.delay_ewma_s <= 0.05
    assert a.limit == 4000.0
    a.delay_ewma_s = 0.025  # exactly half the target: not under it
    a.observe(waited_s=0.026, batch_tokens=1000, run_s=0.001)
    assert a.limit == 4000.0


def test_a_fixed_limit_still_measures_but_never_adapts():
    a = adm(adaptive=False)
    a.observe(waited_s=1.0, batch_tokens=1000, run_s=0.01)
    assert a.drain_tokens_per_s > 0 and a.delay_ewma_s > 0
    assert a.limit == 10_000.0


def test_from_config_carries_a_fixed_limit():
    cfg = BatchingSection(adaptive=False)
    assert Admission.from_config(cfg).adaptive is False


def test_one_queued_token_already_blocks_what_would_exceed_the_limit():
    a = adm()
    assert a.try_admit(1) is None
    assert a.try_admit(4000) is not None  # 1 + 4000 > 4000
    assert a.try_admit(4000) is not None
    assert a.rejected == 2


def test_a_slow_drain_below_one_token_per_second_still_sets_retry_after():
    a = adm()
    a.queued_tokens, a.drain_tokens_per_s = 10, 0.5
    assert a.retry_after() == 20.0


def _held(delay_s: float, **kw) -> Admission:
    """An Admission whose delay EWMA is exactly ``delay_s`` after one observation (alpha 0)."""
    a = adm(**kw)
    a.run_ewma_s, a.delay_ewma_s, a.drain_tokens_per_s = 0.001, delay_s, 1e9
    a.peak_queued = int(a.limit)  # in use: growth is allowed
    a.observe(waited_s=9.9, batch_tokens=1000, run_s=0.001, alpha=0.0)
    assert a.delay_ewma_s == delay_s
    return a


def test_exactly_the_target_holds_and_just_over_it_shrinks():
    assert _held(0.05).limit == 4000.0
    assert _held(0.0501).limit == 3200.0


def test_exactly_half_the_target_holds_and_just_under_it_grows():
    assert _held(0.025).limit == 4000.0
    assert _held(0.0249).limit == 4100.0
    assert _held(0.02).limit == 4100.0  # between a third and a half of the target: grows


def test_a_little_law_bound_under_one_token_still_clamps_to_the_floor():
    a = adm()
    a.run_ewma_s, a.delay_ewma_s, a.drain_tokens_per_s = 0.01, 1.0, 1.0
    a.observe(waited_s=1.0, batch_tokens=0, run_s=0.0, alpha=0.0)
    assert a.limit == 250.0  # little = 2 x 1 x 0.06 = 0.12 tokens: the floor, not x0.8


def test_the_limit_never_shrinks_below_the_batchers_floor():
    a = adm()
    a.floor_tokens = 3000.0  # two full batches of the texts arriving
    for _ in range(50):
        a.observe(waited_s=5.0, batch_tokens=1, run_s=1.0)  # drain collapses, delay far over
    assert a.limit == 3000.0
    a.limit = 100.0  # below the floor (it rose since): back up at the next batch
    a.observe(waited_s=0.04, batch_tokens=1000, run_s=1.0, alpha=1.0)
    assert a.limit == 3000.0
    a.floor_tokens = 50_000.0  # never above the configured maximum
    a.observe(waited_s=5.0, batch_tokens=1000, run_s=1.0)
    assert a.limit == 10_000.0


def test_a_target_shorter_than_one_batch_is_read_as_one_batch_time():
    a = adm()  # target 50 ms; batches take 200 ms
    a.run_ewma_s, a.delay_ewma_s, a.drain_tokens_per_s = 0.2, 0.15, 10_000.0
    a.observe(waited_s=0.35, batch_tokens=2000, run_s=0.2, alpha=0.0)
    assert a.limit == 4000.0  # 150 ms beyond the running batch: under one batch time, holds
    a.observe(waited_s=0.35, batch_tokens=2000, run_s=0.2, alpha=1.0)  # delay 150 ms < 200
    assert a.limit == 4000.0
    a.observe(waited_s=0.9, batch_tokens=2000, run_s=0.2, alpha=1.0)  # 700 ms: shrinks
    assert a.limit == pytest.approx(min(3200.0, 2 * 10_000 * (0.2 + 0.2)))
