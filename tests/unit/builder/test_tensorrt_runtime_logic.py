"""The TensorRT paths' decisions that need no GPU: the timing cache's key and its locked atomic
merge, profile selection, and that every TensorRT call's failure becomes an error naming the
call. The TensorRT objects here are recording stand-ins for the call sequence only — they are
no evidence that TensorRT runs (that is `make gpu-check`, on a GPU)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from artifacts.manifest import TokenizerSpec
from artifacts.textproc import TextEncoder
from artifacts.trt_session import (
    Profile,
    TrtCallError,
    bind_inputs,
    choose_profile,
    engine_profiles,
    open_engine,
    traffic_profiles,
)
from builder.quantize.calibration import calibration_batches
from builder.targets.tensorrt import save_timing_cache, timing_cache_path
from tests.factories import minilm_dir

PROFILES = traffic_profiles(64, 256)


# ---- timing cache --------------------------------------------------------------------------


def test_timing_cache_is_keyed_by_gpu_model_capability_and_version(tmp_path):
    a = timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "9.0", "11.4.0.106")
    assert a == tmp_path / "trt-timing-nvidia-h100-80gb-hbm3-sm9.0-trt11.4.0.106.cache"
    others = {
        timing_cache_path(tmp_path, "NVIDIA H200", "9.0", "11.4.0.106"),
        timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "8.9", "11.4.0.106"),
        timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "9.0", "10.13.0.35"),
    }
    assert a not in others and len(others) == 3
    trick = timing_cache_path(tmp_path, "../../etc/passwd", "9.0", "11")
    assert trick.parent == tmp_path and "/" not in trick.name


def _union(current: bytes, ours: bytes) -> bytes:
    return b"\n".join(sorted(set(current.split(b"\n")) | set(ours.split(b"\n"))))


def test_saving_merges_with_what_is_there(tmp_path):
    path = tmp_path / "c" / "t.cache"
    save_timing_cache(path, b"a", _union)
    save_timing_cache(path, b"b", _union)
    assert path.read_bytes() == b"a\nb"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.cache", "t.cache.lock"]


def _save_many(path: str, tag: str) -> None:
    for i in range(20):
        save_timing_cache(Path(path), f"{tag}{i}".encode(), _union)


def test_concurrent_builds_lose_no_timings(tmp_path):
    path = tmp_path / "t.cache"
    procs = [
        multiprocessing.get_context("spawn").Process(target=_save_many, args=(str(path), t))
        for t in "xyz"
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert set(path.read_bytes().split(b"\n")) == {
        f"{t}{i}".encode() for t in "xyz" for i in range(20)
    }


def test_a_failed_merge_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "t.cache"
    save_timing_cache(path, b"old", _union)

    def broken(current: bytes, ours: bytes) -> bytes:
        raise RuntimeError("combine crashed")

    with pytest.raises(RuntimeError):
        save_timing_cache(path, b"new", broken)
    assert path.read_bytes() == b"old"
    save_timing_cache(path, b"new", _union)  # and the lock was released
    assert path.read_bytes() == b"new\nold"


# ---- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "index"),
    [((1, 8), 0), ((1, 16), 0), ((2, 12), 0), ((32, 64), 1), ((16, 40), 1), ((64, 256), 1)],
)
def test_the_nearest_profile_runs_the_request(shape, index):
    assert choose_profile(PROFILES, shape) == index


@pytest.mark.parametrize("shape", [(65, 8), (1, 257), (0, 8), (8,)])
def test_a_shape_outside_every_profile_is_refused_with_the_ranges(shape):
    with pytest.raises(ValueError, match=r"outside every profile \(\(1, 1\)\.\.\(64, 256\)"):
        choose_profile(PROFILES, shape)


def test_ties_go_to_the_first_profile():
    same = (Profile((1, 1), (4, 4), (8, 8)), Profile((1, 1), (4, 4), (8, 8)))
    assert choose_profile(same, (4, 4)) == 0


class Context:
    """Records the calls; each method answers what ``answers`` says (default: success)."""

    def __init__(self, active: int = 0, **answers) -> None:
        self.answers = answers
        self.calls: list[tuple] = []
        self.active_optimization_profile = active

    def _answer(self, name, *args):
        self.calls.append((name, *args))
        return self.answers.get(name, True)

    def set_optimization_profile_async(self, index, stream):
        ok = self._answer("profile", index, stream)
        if ok:
            self.active_optimization_profile = index
        return ok

    def set_input_shape(self, name, dims):
        return self._answer("shape", name, dims)

    def set_tensor_address(self, name, ptr):
        return self._answer("address", name, ptr)

    def get_tensor_shape(self, name):
        self.calls.append(("out", name))
        return self.answers.get("out", (2, 384))


def bind(ctx, shape=(2, 12)):
    names = ["input_ids", "attention_mask"]
    return bind_inputs(ctx, PROFILES, [(n, shape, 100 + i) for i, n in enumerate(names)], 7, "emb")


def test_binding_switches_profile_only_when_needed():
    ctx = Context()
    assert bind(ctx) == (0, (2, 384))
    assert [c[0] for c in ctx.calls] == ["shape", "address", "shape", "address", "out"]
    ctx = Context()
    assert bind(ctx, (32, 64)) == (1, (2, 384))
    assert ctx.calls[0] == ("profile", 1, 7)


@pytest.mark.parametrize(
    ("answers", "shape", "message"),
    [
        ({"profile": False}, (32, 64), r"set_optimization_profile_async\(1\) failed"),
        (
            {"shape": False},
            (2, 12),
            r"set_input_shape\('input_ids', \(2, 12\)\) refused the shape \(profile 0: \(1, 1\)\.\.\(64, 256\)\)",
        ),
        ({"address": False}, (2, 12), r"set_tensor_address\('input_ids'\) failed"),
        ({"out": (2, -1)}, (2, 12), r"cannot tell the shape of 'emb' \(\(2, -1\)\)"),
        ({"out": ()}, (2, 12), r"cannot tell the shape of 'emb'"),
        ({}, (300, 8), r"outside every profile"),
    ],
)
def test_every_failed_call_is_named(answers, shape, message):
    with pytest.raises(TrtCallError, match=message):
        bind(Context(**answers), shape)


class Runtime:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, plan):
        return self.engine


class Engine:
    def __init__(self, context) -> None:
        self.context = context
        self.num_optimization_profiles = 2

    def create_execution_context(self):
        return self.context

    def get_tensor_profile_shape(self, name, i):
        return [PROFILES[i].min, PROFILES[i].opt, PROFILES[i].max]


class Trt:
    __version__ = "11.4.0.106"


def test_opening_allows_host_code_only_for_version_compatible_engines():
    rt = Runtime(Engine("ctx"))
    assert open_engine(Trt, rt, b"plan", version_compatible=False)[1] == "ctx"
    assert rt.engine_host_code_allowed is False
    open_engine(Trt, rt, b"plan", version_compatible=True)
    assert rt.engine_host_code_allowed is True


def test_opening_refuses_none_results_by_name():
    with pytest.raises(
        TrtCallError,
        match=r"deserialize_cuda_engine returned None for a 4-byte plan \(TensorRT 11.4.0.106",
    ):
        open_engine(Trt, Runtime(None), b"plan", version_compatible=False)
    with pytest.raises(TrtCallError, match="create_execution_context returned None"):
        open_engine(Trt, Runtime(Engine(None)), b"plan", version_compatible=False)


def test_profiles_are_read_back_from_the_engine():
    assert engine_profiles(Engine("ctx"), "input_ids") == list(PROFILES)


# ---- calibration data: the CPU targets' batches --------------------------------------------


def test_calibration_batches_carry_the_length_mix():
    encoder = TextEncoder(minilm_dir() / "tokenizer.json", TokenizerSpec(max_length=64))
    texts = ["usb c cable"] * 16 + ["long description " * 40] * 16 + ["mug"] * 5
    batches = calibration_batches(encoder, texts, ["input_ids", "attention_mask"], batch_size=16)
    assert [b["input_ids"].shape[0] for b in batches] == [16, 16, 5]
    lengths = [b["input_ids"].shape[1] for b in batches]
    assert lengths[1] == 64 and lengths[0] < 10 and lengths[2] < 10
    assert all(b["input_ids"].dtype == np.int64 for b in batches)
    assert all(set(b) == {"input_ids", "attention_mask"} for b in batches)


def test_thread_safety_of_the_lock_file(tmp_path):
    path = tmp_path / "t.cache"
    threads = [threading.Thread(target=_save_many, args=(str(path), t)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(path.read_bytes().split(b"\n")) == 40


def test_a_failed_bind_after_a_switch_leaves_no_stale_profile():
    ctx = Context(shape=False)
    with pytest.raises(TrtCallError):
        bind(ctx, (32, 64))  # switched to profile 1, then set_input_shape failed
    ctx.answers = {}
    ctx.calls.clear()
    assert bind(ctx, (2, 12))[0] == 0
    assert ctx.calls[0] == ("profile", 0, 7)  # the context's own state says to switch back
