"""In-toto attestations a build worker signs (DSSE, its own key): SLSA provenance for what it
built, and a verification statement for what it re-checked.

* ``provenance.json`` (in every bundle the build service produces, so the OMS signature covers
  it too): an in-toto v1 statement with a SLSA v1 provenance predicate — the bundle's files as
  subjects; the build request as external parameters (source, calibration and eval digests,
  target, version, thresholds); the toolchain; the builder's identity; the gate metrics.
* a verification attestation: a *different* worker re-ran the golden check and the gate on the
  uploaded bundle; subject: the bundle's manifest digest.

Central checks both against the job it leased before anything is registered
(:func:`check_provenance`, :func:`check_verification`); ``artifact inspect`` shows them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from artifacts.errors import BadSignatureError, Unprocessable
from artifacts.signing import SigningKey, TrustedKeys
from artifacts.wire import BuildRequest

PROVENANCE_FILE = "provenance.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://shipyard.dev/build/v1"
VERIFICATION = "https://shipyard.dev/attestations/verification/v1"
BUILDER_PREFIX = "https://shipyard.dev/workers/"


@dataclass(frozen=True)
class BuildParameters:
    """What the build request determined (SLSA ``externalParameters``)."""

    model: str
    version: int
    task: str
    target: str
    source: str  # sha256 of the source archive
    calibration: str | None
    eval: str | None
    thresholds: Mapping[str, float]
    max_batch: int
    trt_compat: Sequence[str] = ()
    index: Mapping[str, Any] | None = None  # an index build: the model bundle and delta base
    prune: str | None = None  # a variant build: artifacts.variants.PruneSpec.as_text()

    @classmethod
    def for_job(cls, req: BuildRequest, target: str, version: int) -> BuildParameters:
        """What the provenance of ``target`` built for ``req`` into ``version`` must say."""
        return cls(
            model=req.model,
            version=version,
            task=req.task,
            target=target,
            source=req.source_blob,
            calibration=req.calibration_blob,
            eval=req.eval_blob,
            thresholds=req.thresholds,
            max_batch=req.max_batch,
            trt_compat=list(req.trt_compat),
            index=msgspec.to_builtins(req.index) if req.index is not None else None,
            prune=req.prune,
        )

    def as_dict(self) -> dict[str, Any]:
        return (
            {
                "model": self.model,
                "version": self.version,
                "task": self.task,
                "target": self.target,
                "source": self.source,
                "calibration": self.calibration,
                "eval": self.eval,
                "thresholds": dict(sorted(self.thresholds.items())),
                "max_batch": self.max_batch,
            }
            | ({"trt_compat": sorted(self.trt_compat)} if self.trt_compat else {})
            | ({"index": dict(sorted(self.index.items()))} if self.index is not None else {})
            | ({"prune": self.prune} if self.prune else {})
        )


def _subjects(files: Mapping[str, str]) -> list[dict]:
    return [
        {"name": path, "digest": {"sha256": digest.split(":", 1)[1]}}
        for path, digest in sorted(files.items())
    ]


def provenance_statement(  # noqa: PLR0913 - the provenance record's fields, by keyword
    *,
    files: Mapping[str, str],
    params: BuildParameters,
    builder: str,
    toolchain: Mapping[str, str],
    metrics: Mapping[str, float],
    started: str,
    finished: str,
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": _subjects(files),
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": params.as_dict(),
                "internalParameters": {"toolchain": dict(sorted(toolchain.items()))},
                "resolvedDependencies": [
                    {"name": name, "digest": {"sha256": digest.split(":", 1)[1]}}
                    for name, digest in (
                        ("source", params.source),
                        ("calibration", params.calibration),
                        ("eval", params.eval),
                    )
                    if digest
                ],
            },
            "runDetails": {
                "builder": {"id": BUILDER_PREFIX + builder},
                "metadata": {"startedOn": started, "finishedOn": finished},
                "byproducts": [{"name": "gate", "content": dict(sorted(metrics.items()))}],
            },
        },
    }


def sign_statement(statement: Mapping[str, Any], key: SigningKey) -> bytes:
    """The statement in a DSSE envelope signed by ``key`` (JSON bytes)."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps(key.sign_envelope(payload), sort_keys=True).encode()


def _obj(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a worker's answer is hostile: a
    list or a string where an object belongs is a mismatch, never an AttributeError)."""
    return value if isinstance(value, dict) else {}


def open_statement(envelope: bytes, trusted: TrustedKeys, what: str) -> dict[str, Any]:
    try:
        env = json.loads(envelope)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadSignatureError(f"{what} is not a JSON DSSE envelope") from exc
    payload, _key_id = trusted.open_envelope(env)
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise BadSignatureError(f"{what}'s statement is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise BadSignatureError(f"{what} is not an in-toto v1 statement")
    return statement


def check_provenance(
    envelope: bytes,
    trusted: TrustedKeys,
    *,
    params: BuildParameters,
    builder: str,
    files: Mapping[str, str],
) -> dict[str, Any]:
    """The provenance must be signed by ``builder``'s key and say exactly what was leased:
    these parameters, this builder, these files. Returns the statement."""
    st = open_statement(envelope, trusted, PROVENANCE_FILE)
    pred = _obj(st.get("predicate"))
    definition = _obj(pred.get("buildDefinition"))
    problems = []
    if st.get("predicateType") != SLSA_PROVENANCE or definition.get("buildType") != BUILD_TYPE:
        problems.append("not a Shipyard SLSA v1 provenance")
    if definition.get("externalParameters") != params.as_dict():
        problems.append(
            f"parameters {definition.get('externalParameters')} are not the job's {params.as_dict()}"
        )
    builder_id = _obj(_obj(pred.get("runDetails")).get("builder")).get("id")
    if builder_id != BUILDER_PREFIX + builder:
        problems.append(f"builder {builder_id!r} is not {BUILDER_PREFIX + builder!r}")
    if st.get("subject") != _subjects(files):
        problems.append("its subjects are not the bundle's files")
    if problems:
        raise Unprocessable(f"{PROVENANCE_FILE} does not match the job: " + "; ".join(problems))
    return st


def verification_statement(  # noqa: PLR0913 - the verification record's fields, by keyword
    *,
    subject: str,
    manifest_digest: str,
    verifier: str,
    builder: str,
    passed: bool,
    metrics: Mapping[str, float],
    thresholds: Mapping[str, float],
    reason: str = "",
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": manifest_digest.split(":", 1)[1]}}],
        "predicateType": VERIFICATION,
        "predicate": {
            "verifier": {"id": BUILDER_PREFIX + verifier},
            "builder": {"id": BUILDER_PREFIX + builder},
            "checks": ["signature", "golden", "gate"],
            "passed": passed,
            "metrics": dict(sorted(metrics.items())),
            "thresholds": dict(sorted(thresholds.items())),
            "reason": reason,
        },
    }


def check_verification(
    envelope: bytes,
    trusted: TrustedKeys,
    *,
    manifest_digest: str,
    verifier: str,
    builder: str,
) -> dict[str, Any]:
    """A verification signed by ``verifier`` (never the builder) about this exact manifest.
    Returns the predicate (``passed``, ``metrics``, ``reason``)."""
    if verifier == builder:
        raise Unprocessable(f"worker {builder} cannot verify its own build")
    st = open_statement(envelope, trusted, "the verification attestation")
    pred = _obj(st.get("predicate"))
    subjects = st.get("subject")
    first = _obj(subjects[0]) if isinstance(subjects, list) and len(subjects) == 1 else {}
    problems = []
    if st.get("predicateType") != VERIFICATION:
        problems.append("not a Shipyard verification")
    if _obj(first.get("digest")).get("sha256") != manifest_digest.split(":", 1)[1]:
        problems.append("its subject is not this bundle's manifest")
    if _obj(pred.get("verifier")).get("id") != BUILDER_PREFIX + verifier:
        problems.append(f"it names another verifier than {verifier}")
    if _obj(pred.get("builder")).get("id") != BUILDER_PREFIX + builder:
        problems.append(f"it names another builder than {builder}")
    if not isinstance(pred.get("passed"), bool):
        problems.append("it does not say whether the bundle passed")
    if problems:
        raise Unprocessable("verification attestation refused: " + "; ".join(problems))
    return pred
