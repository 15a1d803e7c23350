import numpy as np

from edge_runtime.inference.result_cache import ENTRY_OVERHEAD, ResultCache, normalise


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


def test_normalise():
    assert normalise("  Running\tShoes \n") == "Running Shoes"
    assert normalise("cafe\u0301") == normalise("café")


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
