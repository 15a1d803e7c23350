"""The worker's FP32 reference cache: reused for the same inputs, recomputed otherwise."""

import numpy as np

from builder.reference import ReferenceCache


def _compute(calls):
    def compute():
        calls.append(1)
        return [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((2, 2), np.float32)]

    return compute


def test_hit_miss_and_key(tmp_path):
    cache, calls = ReferenceCache(tmp_path), []
    first = cache.outputs({"source": "a"}, [3, 2], _compute(calls))
    again = cache.outputs({"source": "a"}, [3, 2], _compute(calls))
    assert len(calls) == 1
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    cache.outputs({"source": "b"}, [3, 2], _compute(calls))  # other inputs: computed
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2


def test_corrupt_or_mismatched_entries_are_recomputed(tmp_path):
    cache, calls = ReferenceCache(tmp_path), []
    cache.outputs({"k": 1}, [3, 2], _compute(calls))
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not an npz")
    cache.outputs({"k": 1}, [3, 2], _compute(calls))
    assert len(calls) == 2
    cache.outputs({"k": 1}, [4, 2], _compute(calls))  # sizes disagree with the eval splits
    assert len(calls) == 3
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npz"]  # no temp files left


def test_disabled(tmp_path):
    calls = []
    ReferenceCache(None).outputs({"k": 1}, [3, 2], _compute(calls))
    ReferenceCache(None).outputs({"k": 1}, [3, 2], _compute(calls))
    assert len(calls) == 2


def test_a_verifier_never_reads_the_cache_but_records(tmp_path):
    calls = []
    ReferenceCache(tmp_path).outputs({"k": 1}, [3, 2], _compute(calls))
    ReferenceCache(tmp_path, read=False).outputs({"k": 1}, [3, 2], _compute(calls))
    assert len(calls) == 2


def test_a_truncated_zip_entry_is_dropped_and_recomputed(tmp_path):
    cache, calls = ReferenceCache(tmp_path), []
    cache.outputs({"k": 1}, [3, 2], _compute(calls))
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:40])  # zip magic, then nothing
    cache.outputs({"k": 1}, [3, 2], _compute(calls))
    assert len(calls) == 2
