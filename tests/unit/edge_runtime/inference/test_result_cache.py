import numpy as np

from edge_runtime.inference.result_cache import ENTRY_OVERHEAD, ResultCache, text_key


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def vec(x: float, n: int = 4) -> np.ndarray:
    return np.full(n, x, dtype=np.float32)


def test_hit_miss_and_copy_semantics():
    c = ResultCache(1 << 20, 60)
    key = ("m", 1, "embedding", "q")
    assert c.get(key) is None
    v = vec(1.0)
    c.put(key, (v, 3, 0))
    v[:] = 9  # the cache kept its own copy
    got = c.get(key)
    assert got[0][0] == 1.0 and got[1] == 3
    assert not got[0].flags.writeable
    assert (c.stats.hits, c.stats.misses) == (1, 1)


def test_lru_eviction_by_bytes():
    per = vec(0, 16).nbytes + ENTRY_OVERHEAD
    c = ResultCache(per * 3, 60)
    for i in range(3):
        c.put(("k", i), vec(i, 16))
    c.get(("k", 0))  # 0 is now most recent
    c.put(("k", 3), vec(3, 16))
    assert c.get(("k", 1)) is None and c.get(("k", 0)) is not None
    assert c.stats.evictions == 1 and c.bytes <= per * 3 and len(c) == 3


def test_ttl_expiry():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    c.put(("k",), vec(1))
    clock.t = 9.9
    assert c.get(("k",)) is not None
    clock.t = 10.0
    assert c.get(("k",)) is None and c.stats.expirations == 1 and c.bytes == 0


def test_version_in_key_separates_versions_and_disabled_cache():
    c = ResultCache(1 << 20, 60)
    c.put(("m", 1, "embedding", "q"), vec(1))
    assert c.get(("m", 2, "embedding", "q")) is None
    off = ResultCache(0, 60)
    off.put(("k",), vec(1))
    assert off.get(("k",)) is None and len(off) == 0


def test_oversized_entry_is_not_stored():
    c = ResultCache(100, 60)
    c.put(("big",), vec(0, 1000))
    assert len(c) == 0 and c.bytes == 0


def test_keys_are_fixed_size_and_the_byte_bound_holds_for_real_memory():
    """A 250 KB text costs the cache what a word does (its digest), and the counted bytes
    are at least what the entries really take (measured with tracemalloc)."""
    import tracemalloc

    long_text = "trail running shoe " * 13_000  # ~250 KB
    assert len(text_key(long_text)) == 16 == len(text_key(("q", "d")))
    assert text_key(("ab", "c")) != text_key(("a", "bc"))
    c = ResultCache(64 << 20, 60)
    keys = [text_key(long_text[i:]) for i in range(200)]  # keys hashed outside the traced part
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, key in enumerate(keys):
        c.put(("m", 1, "embedding", key), (vec(i, 384), 128, 1))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used <= c.bytes, (used, c.bytes)  # the bound counts everything an entry holds
    assert c.bytes < 2 * used  # and is not wildly above it


def test_expired_entries_are_swept_without_being_touched():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    for i in range(50):
        c.put(("k", i), vec(i))
    clock.t = 11.0
    c.put(("fresh",), vec(1))  # past half the TTL since the last sweep: one sweep runs
    assert len(c) == 1 and c.stats.expirations == 50
    assert c.bytes == vec(1).nbytes + ENTRY_OVERHEAD


def test_keys_are_the_exact_text_so_no_input_answers_another():
    # the tokenizer deletes U+001F where str.split would see a space: different inputs
    assert text_key("running\x1fshoes") != text_key("running shoes")
    assert text_key("Running  shoes") != text_key("Running shoes")
    assert text_key("cafe\u0301") != text_key("café")
    assert text_key("x") == text_key("x") and text_key(("q", "d")) != text_key("qd")


def test_collate_bucketing_respects_the_cap():
    from artifacts.textproc import Encoded, collate

    def e(n):
        return Encoded(
            ids=np.ones(n, dtype=np.int64), type_ids=np.zeros(n, dtype=np.int64), truncated=False
        )

    names = ["input_ids", "attention_mask"]
    assert collate([e(5), e(17)], names, multiple_of=16)["input_ids"].shape == (2, 32)
    assert collate([e(250)], names, multiple_of=16, cap=250)["input_ids"].shape == (1, 250)
    out = collate([e(3)], names, multiple_of=16, cap=256)
    assert out["input_ids"].shape == (1, 16) and out["attention_mask"].sum() == 3


def test_a_lone_item_collates_as_it_would_padded():
    """One item at its own length (c=1) gets views of its arrays, equal to the padded path's
    output in values, dtype and shape; int32 items and bucketed lengths still get copies."""
    from artifacts.textproc import Encoded, collate

    names = ["input_ids", "attention_mask", "token_type_ids"]
    lone = Encoded(
        ids=np.arange(5, dtype=np.int64), type_ids=np.zeros(5, np.int64), truncated=False
    )
    twin = Encoded(
        ids=np.arange(5, dtype=np.int64), type_ids=np.zeros(5, np.int64), truncated=False
    )
    fast = collate([lone], names, pad_id=7)
    padded = {k: v[:1] for k, v in collate([lone, twin], names, pad_id=7).items()}
    for k in names:
        assert fast[k].dtype == np.int64 and fast[k].shape == (1, 5)
        assert fast[k].tolist() == padded[k].tolist()
    assert np.shares_memory(fast["input_ids"], lone.ids)
    narrow = Encoded(
        ids=np.arange(5, dtype=np.int32), type_ids=np.zeros(5, np.int32), truncated=False
    )
    assert collate([narrow], names)["input_ids"].dtype == np.int64
    bucketed = collate([lone], names, pad_id=7, multiple_of=8)
    assert bucketed["input_ids"].tolist() == [[0, 1, 2, 3, 4, 7, 7, 7]]
    assert bucketed["attention_mask"].tolist() == [[1] * 5 + [0] * 3]


def test_re_putting_a_key_replaces_it_without_double_counting():
    c = ResultCache(1 << 20, 60)
    c.put(("k",), vec(1, 16))
    c.put(("k",), vec(2, 16))
    assert len(c) == 1 and c.bytes == vec(0, 16).nbytes + ENTRY_OVERHEAD
    assert c.get(("k",))[0] == 2


def test_an_oversized_put_keeps_what_is_cached():
    per = vec(0, 16).nbytes + ENTRY_OVERHEAD
    c = ResultCache(per * 2, 60)
    c.put(("a",), vec(1, 16))
    c.put(("huge",), vec(0, 10_000))  # bigger than the whole cache: not stored, nothing flushed
    assert len(c) == 1 and c.get(("a",)) is not None and c.stats.evictions == 0


def test_the_byte_bound_is_inclusive():
    per = vec(0, 16).nbytes + ENTRY_OVERHEAD
    c = ResultCache(per * 2, 60)  # exactly two entries fit
    c.put(("a",), vec(1, 16))
    c.put(("b",), vec(2, 16))
    assert len(c) == 2 and c.bytes == per * 2 and c.stats.evictions == 0
    c.put(("c",), vec(3, 16))
    assert len(c) == 2 and c.stats.evictions == 1 and c.get(("a",)) is None
    one = ResultCache(per, 60)  # an entry exactly the size of the cache fits
    one.put(("x",), vec(1, 16))
    assert len(one) == 1


def test_counters_and_clear():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    c.put(("a",), vec(1))
    assert c.get(("a",)) is not None and c.get(("b",)) is None
    clock.t = 10.0
    assert c.get(("a",)) is None
    assert (c.stats.hits, c.stats.misses, c.stats.expirations) == (1, 2, 1)
    c.put(("b",), vec(1))
    c.clear()
    assert len(c) == 0 and c.bytes == 0
    no_ttl = ResultCache(1 << 20, 0)
    assert not no_ttl.enabled
    no_ttl.put(("a",), vec(1))
    assert no_ttl.get(("a",)) is None and no_ttl.stats.misses == 0


def test_plain_arrays_and_tuples_are_both_stored_as_read_only_copies():
    c = ResultCache(1 << 20, 60)
    a = vec(5)
    c.put(("plain",), a)
    a[:] = 0
    got = c.get(("plain",))
    assert isinstance(got, np.ndarray) and got[0] == 5 and not got.flags.writeable


def test_a_sweep_runs_only_every_half_ttl_and_reports_what_went():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    c.put(("old",), vec(1))
    clock.t = 4.9  # not yet half the TTL since the start: no sweep on put
    c.put(("new",), vec(1))
    clock.t = 10.0
    assert c.sweep() == 1 and len(c) == 1  # "old" expired at 10.0 (inclusive)
    assert c.bytes == vec(1).nbytes + ENTRY_OVERHEAD


def test_lone_surrogates_are_keyed_not_crashed_on():
    # JSON may carry "\ud800"; the key must still be computed (and differ from the text without it)
    assert text_key("\ud800x") != text_key("x")
    assert text_key(("\udfff", "d")) != text_key(("", "d"))


def test_counters_accumulate():
    clock = Clock()
    per = vec(0, 16).nbytes + ENTRY_OVERHEAD
    c = ResultCache(per * 2, 10, clock=clock)
    assert c.get(("x",)) is None and c.get(("y",)) is None
    c.put(("a",), vec(1, 16))
    c.put(("b",), vec(2, 16))
    assert c.get(("a",)) is not None and c.get(("b",)) is not None
    c.put(("c",), vec(3, 16))
    c.put(("d",), vec(4, 16))  # two evictions
    clock.t = 100.0
    assert c.get(("c",)) is None and c.get(("d",)) is None  # two expirations on get
    assert (c.stats.hits, c.stats.misses, c.stats.evictions, c.stats.expirations) == (2, 4, 2, 2)
    c.put(("e",), vec(5, 16))
    c.put(("f",), vec(6, 16))
    assert c.sweep(now=200.0) == 2 and c.stats.expirations == 4  # sweeps add to the count


def test_sweeps_happen_every_half_ttl_exactly():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    for t, key in ((0.0, "a"), (4.0, "b"), (5.0, "c"), (9.0, "d")):
        clock.t = t
        c.put((key,), vec(1))
    assert len(c) == 4 and c.stats.expirations == 0
    clock.t = 10.0  # half a TTL after the sweep at 5.0: this put sweeps "a" (expired at 10.0)
    c.put(("e",), vec(1))
    assert len(c) == 4 and c.stats.expirations == 1
    clock.t = 14.0  # "b" expired at 14.0, but the next sweep is at 15.0
    c.put(("f",), vec(1))
    assert c.stats.expirations == 1


def test_an_explicit_sweep_time_is_used():
    clock = Clock()
    c = ResultCache(1 << 20, 10, clock=clock)
    c.put(("a",), vec(1))
    assert c.sweep(now=5.0) == 0 and c.sweep(now=10.0) == 1 and len(c) == 0
