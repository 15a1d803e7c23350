"""The embed worker's adaptive window (pure AIMD)."""

from edge_runtime.embedq.window import AdaptiveWindow


def test_grows_by_one_per_window_and_halves_at_most_once_a_second():
    w = AdaptiveWindow(ceiling=8)
    assert w.slots == 1
    now = 0.0
    for _ in range(40):
        w.observe(interactive_p99_ms=5.0, target_ms=50.0, now=now)
    assert w.slots == 8  # capped by max_ack_pending
    w.observe(interactive_p99_ms=80.0, target_ms=50.0, now=10.0)
    assert w.slots == 4
    w.observe(interactive_p99_ms=80.0, target_ms=50.0, now=10.5)
    assert w.slots == 4  # one cut per second: a burst of late jobs is one signal
    w.cut(11.6)
    w.cut(12.7)
    w.cut(13.8)
    assert w.slots == 1  # never below one job in flight
