"""The bulk lane's pacing while interactive traffic is present (pure)."""

from edge_runtime.batching.bulk_pacer import MIN_TOKENS, BulkPacer


def test_no_interactive_traffic_means_full_batches_back_to_back():
    p = BulkPacer(max_tokens=4096, batch_ms=10, share=0.25)
    p.ran(now=5.0, seconds=0.5)  # a long bulk batch, nobody waiting
    assert p.tokens(5.0) == 4096 and p.wait_s(5.0) == 0.0


def test_interactive_traffic_shrinks_and_spaces_bulk_batches():
    p = BulkPacer(max_tokens=4096, batch_ms=10, share=0.25)
    p.interactive(now=10.0)
    p.ran(now=10.1, seconds=0.08)  # 80 ms: eight times the target
    assert p.tokens(10.1) <= 4096 * 10 / 80 + 1
    assert abs(p.wait_s(10.1) - 0.24) < 1e-9  # bulk takes at most a quarter of the thread
    for _ in range(30):
        p.ran(now=10.2, seconds=0.05)
    assert p.tokens(10.2) == MIN_TOKENS  # never below one item's worth
    for _ in range(200):
        p.ran(now=10.3, seconds=0.001)  # fast batches: the budget grows back, capped
    assert p.tokens(10.3) == 4096
    assert p.wait_s(11.5) == 0.0 and p.tokens(11.5) == 4096  # a quiet second: full speed again
