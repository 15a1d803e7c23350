"""Pick the backend a model is served with, falling back down the ranked candidates.

For each candidate in the order :func:`artifacts.targets.rank_bundles` returns (operator
policy applied): verify the bundle (digests + signature) → load → golden smoke check → warm up.
``select = "first"`` serves the first that passes; ``"measure"`` times the passing CPU
candidates on this node for ~1 s each and keeps the fastest. Every candidate's outcome and
its reason end up in /v1/status, the logs and the metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts.bundle import VerifiedBundle, verify_bundle
from artifacts.errors import ShipyardError
from artifacts.golden import read_golden
from artifacts.signing import TrustedKeys
from artifacts.states import CandidateStatus
from artifacts.targets import Ranking
from edge_runtime.backends import BackendSettings
from edge_runtime.loaded_model import LoadedModel, check, open_model

log = logging.getLogger("shipyard.edge.select")


class Outcome(msgspec.Struct, kw_only=True):
    target: str
    status: CandidateStatus
    detail: str = ""
    load_ms: float | None = None
    smoke: float | None = None
    latency_ms: float | None = None


@dataclass
class Selection:
    version: int
    chosen: LoadedModel | None
    outcomes: list[Outcome]
    fallbacks: list[str] = field(default_factory=list)  # targets that passed but are not serving

    @property
    def reason(self) -> str:
        if self.chosen is not None:
            return f"serving {self.chosen.target}"
        tried = "; ".join(f"{o.target}: {o.status} ({o.detail})" for o in self.outcomes)
        return f"no candidate could serve: {tried or 'no eligible bundle'}"


def measure(model: LoadedModel, seconds: float) -> float:
    """Mean latency (ms) of alternating single-query and small-batch runs for ~``seconds``."""
    encoded = model.encoder.encode(list(_golden_items(model)))
    short = min(encoded, key=len)
    batch = sorted(encoded, key=len)[:8]
    n, total = 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or n < 4:
        t0 = time.perf_counter()
        model.run([short])
        model.run(batch)
        total += time.perf_counter() - t0
        n += 1
    return total / n * 1e3


def _golden_items(model: LoadedModel):
    return read_golden(model.bundle.path / model.manifest.golden.file).items


@dataclass(frozen=True)
class SelectOptions:
    """How to choose among passing candidates (``[backends]`` in edge.toml)."""

    mode: str = "first"  # "first" | "measure"
    measure_s: float = 1.0
    skip: frozenset[str] = frozenset()  # targets that failed at run time for this version
    opener: Callable[[VerifiedBundle, BackendSettings], LoadedModel] = open_model
    missing: Mapping[str, str] = field(default_factory=dict)  # why a bundle is not on disk


def _failed(target: str, status: CandidateStatus, exc: BaseException | str) -> Outcome:
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"[:500]
    log.warning("%s: %s: %s", target, status, detail)
    return Outcome(target=target, status=status, detail=detail)


def _trial(
    target: str,
    path: Path | None,
    trusted: TrustedKeys,
    settings: BackendSettings,
    opts: SelectOptions,
) -> LoadedModel | Outcome:
    """verify → load → golden smoke check → warm up: the loaded model, or why it failed."""
    opener = opts.opener
    if path is None:
        why = opts.missing.get(target, "bundle not in the local cache")
        return _failed(target, CandidateStatus.FAILED_VERIFICATION, why)
    try:
        bundle = verify_bundle(path, trusted)
    except ShipyardError as exc:
        return _failed(target, CandidateStatus.FAILED_VERIFICATION, str(exc))
    except OSError as exc:  # unreadable cache (permissions, I/O error): not this candidate
        return _failed(target, CandidateStatus.FAILED_VERIFICATION, exc)
    try:
        model = opener(bundle, settings)
    except Exception as exc:  # any engine error: record it and fall back
        return _failed(target, CandidateStatus.FAILED_LOAD, exc)
    try:
        smoke = check(model)
    except Exception as exc:
        model.close()
        return _failed(target, CandidateStatus.FAILED_SMOKE_CHECK, exc)
    if not smoke.passed:
        model.close()
        out = _failed(target, CandidateStatus.FAILED_SMOKE_CHECK, smoke.describe())
        out.smoke, out.load_ms = smoke.worst, model.load_ms
        return out
    try:
        model.warm_up()
    except Exception as exc:  # an engine that fails on the shapes it will serve: next one
        model.close()
        return _failed(target, CandidateStatus.FAILED_SMOKE_CHECK, f"warm-up: {exc}"[:500])
    return model


def _skipped(
    cand_target: str, cand_device: str, passed: list[LoadedModel], opts: SelectOptions
) -> Outcome | None:
    if cand_target in opts.skip:
        return Outcome(
            target=cand_target,
            status=CandidateStatus.FAILED_LOAD,
            detail="failed at run time; skipped",
        )
    if passed and (
        opts.mode == "first" or (cand_device == "cpu" and passed[0].manifest.target.device == "gpu")
    ):
        return Outcome(
            target=cand_target,
            status=CandidateStatus.NOT_TRIED,
            detail=f"{passed[0].target} ranks higher",
        )
    return None


def _verdicts(passed: list[LoadedModel], timings: dict[str, float]) -> list[Outcome]:
    chosen = passed[0]
    out = []
    for m in passed:
        if m is chosen:
            status, detail = (
                CandidateStatus.CHOSEN,
                f"{m.smoke.describe() if m.smoke else ''}; load {m.load_ms:.0f} ms",
            )
        elif m.target in timings:
            status = CandidateStatus.SLOWER
            detail = f"slower: {timings[m.target]:.2f} ms vs {timings[chosen.target]:.2f} ms"
        elif m.manifest.target.variant != chosen.manifest.target.variant:
            status = CandidateStatus.STANDBY
            detail = "passed; another model variant, so not a run-time fallback"
        else:
            status, detail = CandidateStatus.STANDBY, "passed; kept as the next fallback"
        out.append(
            Outcome(
                target=m.target,
                status=status,
                detail=detail,
                load_ms=m.load_ms,
                smoke=m.smoke.worst if m.smoke else None,
                latency_ms=timings.get(m.target),
            )
        )
    return out


def select(
    version: int,
    bundles: dict[str, Path],
    ranking: Ranking,
    trusted: TrustedKeys,
    settings: BackendSettings,
    opts: SelectOptions = SelectOptions(),
) -> Selection:
    outcomes = [
        Outcome(target=e.target, status=CandidateStatus.EXCLUDED, detail=e.reason)
        for e in ranking.excluded
    ]
    passed: list[LoadedModel] = []
    for cand in ranking.eligible:
        skipped = _skipped(cand.target, cand.device, passed, opts)
        if skipped is not None:
            outcomes.append(skipped)
            continue
        tried = _trial(cand.target, bundles.get(cand.target), trusted, settings, opts)
        if isinstance(tried, Outcome):
            outcomes.append(tried)
        else:
            passed.append(tried)
    if not passed:
        return Selection(version=version, chosen=None, outcomes=outcomes)
    timings: dict[str, float] = {}
    if opts.mode == "measure" and len(passed) > 1 and passed[0].manifest.target.device == "cpu":
        # timed only against bundles of the same model: a faster variant (or the full model)
        # never replaces the policy's choice of model by speed alone
        top = passed[0].manifest.target.variant
        same = [m for m in passed if m.manifest.target.variant == top]
        timings = {m.target: measure(m, opts.measure_s) for m in same}
        passed.sort(key=lambda m: timings.get(m.target, math.inf))
    outcomes += _verdicts(passed, timings)
    for m in passed[1:]:
        m.close()  # fallbacks are reopened on demand; do not hold their memory
    order = {c.target: i for i, c in enumerate(ranking.eligible)}
    outcomes.sort(key=lambda o: (o.status == CandidateStatus.EXCLUDED, order.get(o.target, 99)))
    return Selection(
        version=version,
        chosen=passed[0],
        outcomes=outcomes,
        # run-time failover stays within the chosen model: another variant's vectors live in
        # another space (an index built with one would answer garbage for the other)
        fallbacks=[
            m.target
            for m in passed[1:]
            if m.manifest.target.variant == passed[0].manifest.target.variant
        ],
    )
