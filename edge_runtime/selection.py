"""Pick the backend a model is served with, falling back down the ranked candidates.

For each candidate in the order :func:`artifacts.targets.rank_bundles` returns (operator
policy applied): verify the bundle (digests + signature) → load → golden smoke check → warm up.
``select = "first"`` serves the first that passes; ``"measure"`` times the passing CPU
candidates on this node for ~1 s each and keeps the fastest. Every candidate's outcome and
its reason end up in /v1/status, the logs and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts.bundle import verify_bundle
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


def select(
    version: int,
    bundles: dict[str, Path],
    ranking: Ranking,
    trusted: TrustedKeys,
    settings: BackendSettings,
    *,
    mode: str = "first",
    measure_s: float = 1.0,
    skip: set[str] = frozenset(),  # type: ignore[assignment]
    opener: Callable = open_model,
) -> Selection:
    outcomes = [
        Outcome(target=e.target, status=CandidateStatus.EXCLUDED, detail=e.reason)
        for e in ranking.excluded
    ]
    passed: list[LoadedModel] = []
    for cand in ranking.eligible:
        target = cand.target
        if target in skip:
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.FAILED_LOAD,
                    detail="failed at run time; skipped",
                )
            )
            continue
        if passed and (
            mode == "first" or (cand.device == "cpu" and passed[0].manifest.target.device == "gpu")
        ):
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.NOT_TRIED,
                    detail=f"{passed[0].target} ranks higher",
                )
            )
            continue
        path = bundles.get(target)
        if path is None:
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.FAILED_VERIFICATION,
                    detail="bundle not in the local cache",
                )
            )
            continue
        try:
            bundle = verify_bundle(path, trusted)
        except ShipyardError as exc:
            outcomes.append(
                Outcome(target=target, status=CandidateStatus.FAILED_VERIFICATION, detail=str(exc))
            )
            log.warning("%s: refused to load: %s", target, exc)
            continue
        try:
            model = opener(bundle, settings)
        except Exception as exc:  # any engine error: record it and fall back
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.FAILED_LOAD,
                    detail=f"{type(exc).__name__}: {exc}"[:500],
                )
            )
            log.warning("%s: failed to load: %s", target, exc)
            continue
        try:
            smoke = check(model)
        except Exception as exc:
            model.close()
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.FAILED_SMOKE_CHECK,
                    detail=f"{type(exc).__name__}: {exc}"[:500],
                )
            )
            continue
        if not smoke.passed:
            model.close()
            outcomes.append(
                Outcome(
                    target=target,
                    status=CandidateStatus.FAILED_SMOKE_CHECK,
                    detail=smoke.describe(),
                    smoke=smoke.worst,
                    load_ms=model.load_ms,
                )
            )
            log.warning("%s: %s", target, smoke.describe())
            continue
        model.warm_up()
        passed.append(model)
    if not passed:
        return Selection(version=version, chosen=None, outcomes=outcomes)
    timings: dict[str, float] = {}
    if mode == "measure" and len(passed) > 1 and passed[0].manifest.target.device == "cpu":
        for m in passed:
            timings[m.target] = measure(m, measure_s)
        passed.sort(key=lambda m: timings[m.target])
    chosen, others = passed[0], passed[1:]
    for m in passed:
        is_chosen = m is chosen
        if is_chosen:
            detail = f"{m.smoke.describe()}; load {m.load_ms:.0f} ms"
        elif m.target in timings:
            detail = f"slower: {timings[m.target]:.2f} ms vs {timings[chosen.target]:.2f} ms"
        else:
            detail = "passed; kept as the next fallback"
        status = (
            CandidateStatus.CHOSEN
            if is_chosen
            else (CandidateStatus.SLOWER if m.target in timings else CandidateStatus.STANDBY)
        )
        outcomes.append(
            Outcome(
                target=m.target,
                status=status,
                detail=detail,
                load_ms=m.load_ms,
                smoke=m.smoke.worst if m.smoke else None,
                latency_ms=timings.get(m.target),
            )
        )
    for m in others:
        m.close()  # fallbacks are reopened on demand; do not hold their memory
    order = {c.target: i for i, c in enumerate(ranking.eligible)}
    outcomes.sort(key=lambda o: (o.status == CandidateStatus.EXCLUDED, order.get(o.target, 99)))
    return Selection(
        version=version, chosen=chosen, outcomes=outcomes, fallbacks=[m.target for m in others]
    )
