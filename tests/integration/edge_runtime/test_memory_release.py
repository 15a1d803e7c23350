"""Between bursts the onnxruntime backend hands its arena back; answers do not change."""

import numpy as np
import psutil
import pytest

from artifacts.bundle import verify_bundle
from artifacts.signing import TrustedKeys
from artifacts.textproc import Encoded
from edge_runtime.backends import BackendSettings
from edge_runtime.loaded_model import open_model


def _batch(n: int, length: int, seed: int) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    return [
        Encoded(
            ids=rng.integers(1000, 2000, length).astype(np.int64),
            type_ids=np.zeros(length, np.int64),
            truncated=False,
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("target", ["onnx-fp32", "onnx-int8"])
def test_release_memory_keeps_answers(tiny_builds, publisher_keys, target):
    dest, _ = tiny_builds["embedding"]
    bundle = verify_bundle(dest / target, TrustedKeys.from_paths([publisher_keys[1]]))
    model = open_model(bundle, BackendSettings(threads=2))
    big, one = _batch(16, 64, 0), _batch(1, 6, 1)
    before_big, before_one = model.run(big), model.run(one)
    model.release_memory()
    np.testing.assert_array_equal(model.run(big), before_big)
    np.testing.assert_array_equal(model.run(one), before_one)  # the single-thread session too
    model.close()


@pytest.mark.parametrize("pattern", [False, True])
def test_memory_pattern_follows_the_setting(tiny_builds, publisher_keys, pattern):
    """Off by default: serving's batch shapes keep changing, and a block planned per shape
    doubled a batch's activation memory (bench/ort_memory.py)."""
    dest, _ = tiny_builds["embedding"]
    bundle = verify_bundle(dest / "onnx-int8", TrustedKeys.from_paths([publisher_keys[1]]))
    settings = BackendSettings(threads=2, memory_pattern=True) if pattern else BackendSettings(2)
    model = open_model(bundle, settings)
    sessions = [model.backend._sess, model.backend._small]  # type: ignore[attr-defined]
    assert [s.get_session_options().enable_mem_pattern for s in sessions] == [pattern] * 2
    assert model.info["memory_pattern"] == ("on" if pattern else "off")
    big = _batch(8, 32, 3)
    np.testing.assert_allclose(model.run(big), model.run(big), rtol=0, atol=0)
    model.close()


@pytest.mark.slow
def test_release_memory_returns_a_bursts_working_set(minilm_build, publisher_keys):
    from edge_runtime import memory

    dest, _ = minilm_build
    bundle = verify_bundle(dest / "onnx-int8", TrustedKeys.from_paths([publisher_keys[1]]))
    model = open_model(bundle, BackendSettings(threads=2))
    proc = psutil.Process()
    model.run(_batch(64, 128, 2))
    grown = proc.memory_info().rss
    model.release_memory()
    memory.trim()
    released = proc.memory_info().rss
    assert grown - released > 30 * 2**20, (grown / 2**20, released / 2**20)
    model.close()
