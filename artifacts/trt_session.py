"""Running a TensorRT engine safely: opening it, picking the optimisation profile for a request,
binding inputs — every TensorRT call's result checked. No TensorRT import here (the caller
passes its module and objects), so the decisions are tested on CPU; shared by the builder's
runner and the edge backend.

An engine built with several profiles runs a request in the profile whose range holds the
request's ``[batch, sequence]`` shape and whose optimum is nearest to it; the runtime switches
with ``set_optimization_profile_async`` before setting input shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for every ``[batch, sequence]`` input."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def holds(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2 and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


def traffic_profiles(max_batch: int, max_seq: int) -> tuple[Profile, ...]:
    """Search traffic: single short queries (latency) and batches of titles (throughput)."""
    return (
        Profile(min=(1, 1), opt=(1, min(16, max_seq)), max=(max_batch, max_seq)),
        Profile(min=(1, 1), opt=(min(32, max_batch), min(64, max_seq)), max=(max_batch, max_seq)),
    )


def choose_profile(profiles: Sequence[Profile], shape: tuple[int, ...]) -> int:
    """Index of the profile to run ``shape`` in; ValueError naming the ranges if none holds it."""
    fits = [i for i, p in enumerate(profiles) if p.holds(tuple(shape))]
    if not fits:
        ranges = ", ".join(f"{p.min}..{p.max}" for p in profiles) or "none"
        raise ValueError(f"input shape {tuple(shape)} is outside every profile ({ranges})")

    def distance(i: int) -> tuple[float, float]:
        # by scale, not by difference: 640 tokens are nearer 2,048 (3.2x) than 16 (40x)
        (b, s), (ob, os_) = shape, profiles[i].opt
        return abs(math.log(b * s / (ob * os_))), abs(math.log(b / ob))

    return min(fits, key=lambda i: (distance(i), i))


def engine_profiles(engine, input_name: str) -> list[Profile]:
    """The profiles a deserialized ``ICudaEngine`` carries for one input."""
    out = []
    for i in range(engine.num_optimization_profiles):
        lo, opt, hi = (
            tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(input_name, i)
        )
        out.append(Profile(min=lo, opt=opt, max=hi))  # type: ignore[arg-type]
    return out


class TrtCallError(RuntimeError):
    """A TensorRT call returned failure (False, None, -1); the message names the call."""


def bind_inputs(
    context,
    profiles: Sequence[Profile],
    inputs: Sequence[tuple[str, tuple[int, ...], int]],
    stream: int,
    output: str,
) -> tuple[int, tuple[int, ...]]:
    """Select the profile for this request's shape, set every input's shape and address, and
    return ``(profile index, output shape)``; every call's result is checked. The context's
    own ``active_optimization_profile`` says whether to switch (never a copy that a failed call
    halfway could leave stale)."""
    shape = inputs[0][1]
    try:
        index = choose_profile(profiles, shape) if profiles else 0
    except ValueError as exc:
        raise TrtCallError(str(exc)) from exc
    if index != context.active_optimization_profile and not context.set_optimization_profile_async(
        index, stream
    ):
        raise TrtCallError(f"TensorRT set_optimization_profile_async({index}) failed")
    for name, dims, ptr in inputs:
        if not context.set_input_shape(name, dims):
            where = (
                f" (profile {index}: {profiles[index].min}..{profiles[index].max})"
                if profiles
                else ""
            )
            raise TrtCallError(
                f"TensorRT set_input_shape({name!r}, {dims}) refused the shape{where}"
            )
        if not context.set_tensor_address(name, ptr):
            raise TrtCallError(f"TensorRT set_tensor_address({name!r}) failed")
    out = tuple(int(d) for d in context.get_tensor_shape(output))
    if not out or any(d < 0 for d in out):
        raise TrtCallError(
            f"TensorRT cannot tell the shape of {output!r} ({out}) for inputs {shape}"
        )
    return index, out


def open_engine(trt, runtime, plan_bytes: bytes, *, version_compatible: bool):
    """Deserialize with every result checked; version-compatible engines embed a lean runtime,
    which TensorRT runs only when host code is allowed (we verified the bundle's signature)."""
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise TrtCallError(
            f"TensorRT deserialize_cuda_engine returned None for a {len(plan_bytes)}-byte plan "
            f"(TensorRT {trt.__version__}; built for another GPU or TensorRT version?)"
        )
    context = engine.create_execution_context()
    if context is None:
        raise TrtCallError("TensorRT create_execution_context returned None (out of GPU memory?)")
    return engine, context
