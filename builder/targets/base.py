"""What every target builder shares: the build context, candidates, and the ladder runner."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from artifacts.manifest import Attempt, Requires
from artifacts.textproc import Item, TextEncoder
from builder.bench import SpeedResult, Workload
from builder.export import ExportResult
from builder.gate import Evaluator, GateResult, rounded_intervals, rounded_metrics
from builder.quantize.calibration import ActivationStats, collect_stats
from builder.runners import Runner
from builder.source import ModelSource

log = logging.getLogger("shipyard.builder")


class Reporter(Protocol):
    """Progress sink: the CLI draws bars, the build worker streams log lines."""

    def begin(self, scope: str, total: int) -> None: ...
    def step(self, scope: str, message: str) -> None: ...
    def end(self, scope: str, ok: bool, message: str) -> None: ...


class LogReporter:
    def begin(self, scope: str, total: int) -> None:
        log.info("%s: %d steps", scope, total)

    def step(self, scope: str, message: str) -> None:
        log.info("%s: %s", scope, message)

    def end(self, scope: str, ok: bool, message: str) -> None:
        log.info("%s: %s %s", scope, "ok" if ok else "FAILED", message)


@dataclass
class BuildContext:
    source: ModelSource
    task: str
    master: ExportResult
    encoder: TextEncoder
    evaluator: Evaluator
    workload: Workload
    calibration: list[Item]
    workdir: Path
    threads: int
    reporter: Reporter
    max_batch: int
    trt_compat: tuple[str, ...] = ()
    bf16: bool = True  # gate BF16 too where this host runs it natively (BuildConfig.bf16)
    _stats: ActivationStats | None = None

    def activation_stats(self) -> ActivationStats:
        """Per-channel activation maxima of the FP32 master on the calibration mix (cached)."""
        if self._stats is None:
            self._stats = collect_stats(
                self.master.path, self.encoder, self.calibration, threads=self.threads
            )
        return self._stats


@dataclass
class Artifact:
    """A built candidate: its bundle files, how to run it, what it needs."""

    files: dict[str, Path]
    runner: Runner
    requires: Requires
    runtime: dict[str, str] = field(default_factory=dict)
    precision: str = "int8"
    # other numerics the same files may run with on some nodes (runtime flag -> its runner,
    # made only once the candidate passed): each must pass the gate too, and the flag says
    # whether it did ("true"/"false"); ``gated`` keeps the runners that passed (golden check)
    alternates: dict[str, Callable[[], Runner]] = field(default_factory=dict)
    gated: dict[str, Runner] = field(default_factory=dict)


@dataclass
class Candidate:
    config: str
    make: Callable[[Path], Artifact]


@dataclass
class TargetOutcome:
    target: str
    passed: bool
    config: str = ""
    artifact: Artifact | None = None
    gate: GateResult | None = None
    speed: SpeedResult | None = None
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


def _gate_alternates(ctx: BuildContext, target: str, config: str, artifact: Artifact) -> None:
    """Hold each alternate numerics of a passing candidate to the same gate; record the verdict
    in the runtime flag the nodes read (a node never takes numerics that were not gated)."""
    for flag, make_runner in artifact.alternates.items():
        ctx.reporter.step(target, f"{config}: gate ({flag})")
        try:
            runner = make_runner()
            gate = ctx.evaluator.evaluate(runner)
        except Exception as exc:  # an alternate failing leaves the candidate as it is
            log.warning("%s %s: %s not gated: %s", target, config, flag, exc)
            artifact.runtime[flag] = "false"
            continue
        artifact.runtime[flag] = "true" if gate.passed else "false"
        if gate.passed:
            artifact.gated[flag] = runner
        log.info("%s %s: %s %s", target, config, flag, gate.summary())


def run_ladder(ctx: BuildContext, target: str, candidates: list[Candidate]) -> TargetOutcome:
    """Try candidates in order (fastest expected first) and keep the first that passes the
    gate; every attempt is recorded with its metrics and measured speed."""
    start = time.monotonic()
    outcome = TargetOutcome(target=target, passed=False)
    for i, cand in enumerate(candidates, 1):
        ctx.reporter.step(target, f"[{i}/{len(candidates)}] {cand.config}: building")
        workdir = ctx.workdir / target / f"candidate{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            artifact = cand.make(workdir)
        except Exception as exc:  # one candidate failing must not stop the ladder
            log.warning(
                "%s %s failed to build: %s",
                target,
                cand.config,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            outcome.attempts.append(
                Attempt(config=cand.config, passed=False, reason=f"build error: {exc}"[:500])
            )
            continue
        ctx.reporter.step(target, f"[{i}/{len(candidates)}] {cand.config}: gate")
        gate = ctx.evaluator.evaluate(artifact.runner)
        ctx.reporter.step(target, f"[{i}/{len(candidates)}] {cand.config}: benchmark")
        speed = ctx.workload.measure(artifact.runner)
        outcome.attempts.append(
            Attempt(
                config=cand.config,
                passed=gate.passed,
                metrics=rounded_metrics(gate.metrics),
                intervals=rounded_intervals(gate.intervals),
                reason=gate.summary(),
                latency_ms=round(speed.p50_ms, 4),
                throughput=round(speed.throughput, 2),
            )
        )
        if gate.passed:
            _gate_alternates(ctx, target, cand.config, artifact)
            outcome.passed = True
            outcome.config = cand.config
            outcome.artifact = artifact
            outcome.gate = gate
            outcome.speed = speed
            break
        outcome.gate = gate
    if not outcome.passed:
        tried = "; ".join(f"{a.config}: {a.reason}" for a in outcome.attempts)
        outcome.reason = (
            f"no configuration passed the gate ({tried})" if outcome.attempts else "no candidates"
        )
    outcome.seconds = time.monotonic() - start
    return outcome
