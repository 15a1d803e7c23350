"""Model variants: a version may carry, beside the full model's bundles, bundles of a smaller
model derived from it (``pruned-L4``: 4 of its layers kept, distilled from it).

A bundle's registry slot, cache directory and selection name is its **bundle key**: the target
id for the full model (``onnx-int8``), ``target+variant`` for a variant (``onnx-int8+pruned-L4``).
A variant answers differently from the full model by design (it is held to task quality, not to
the full model's vectors), so selection never takes one unless the operator's policy names it
or the version carries nothing else (see :func:`artifacts.targets.rank_bundles`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from artifacts.errors import InputError

SEP = "+"
# The variants the builder makes: a closed grammar, so a variant can never read as a target id
# (``onnx-fp32+onnx-int8`` would slip past an allow list) nor differ only in case from another
# (one cache directory on a case-insensitive disk). A new kind of variant adds its pattern here.
VARIANT = re.compile(r"pruned-L[1-9][0-9]?")
MAX_KEY = 64  # the registry's column


def check_variant(variant: str) -> str:
    """``variant`` if well formed ("" = the full model), else ValueError."""
    if variant and not VARIANT.fullmatch(variant):
        raise ValueError(
            f"variant {variant!r} is not one Shipyard knows (pruned-L<layers>, e.g. pruned-L4)"
        )
    return variant


def bundle_key(target: str, variant: str = "") -> str:
    """``onnx-int8`` / ``onnx-int8+pruned-L4``."""
    return f"{target}{SEP}{check_variant(variant)}" if variant else target


def split_key(key: str) -> tuple[str, str]:
    """(target id, variant) of a bundle key; ValueError when the variant part is malformed.
    The target id is not checked here (callers check it against the taxonomy)."""
    target, sep, variant = key.partition(SEP)
    if sep and not variant:
        raise ValueError(f"bundle key {key!r} ends in {SEP!r} with no variant")
    return target, check_variant(variant)


def family(variant: str) -> str:
    """``pruned-L4`` → ``pruned`` (what a policy may name to take any variant of the kind)."""
    return variant.split("-", 1)[0] if variant else ""


def policy_names(target: str, variant: str) -> tuple[str, ...]:
    """The names a policy list may use for a bundle: its key, and for a variant also the
    variant and its family (``onnx-int8+pruned-L4``, ``pruned-L4``, ``pruned``)."""
    if not variant:
        return (target,)
    return (bundle_key(target, variant), variant, family(variant))


# ---- pruning: the variant a build makes (builder --prune, the build API's `prune`) --------

MAX_BUDGET_S = 3600.0
DEFAULT_BUDGET_S = 120.0
DEFAULT_STEPS = 600
_SPEC = re.compile(r"[a-z_]{1,16}=[0-9.]{1,12}")


@dataclass(frozen=True)
class PruneSpec:
    """``--prune layers=K[,steps=N][,budget=S]``: keep K layers, distil for at most N steps and
    S seconds. ``variant`` names the bundles (``pruned-L4``)."""

    layers: int
    steps: int = DEFAULT_STEPS
    budget_s: float = DEFAULT_BUDGET_S

    @property
    def variant(self) -> str:
        return f"pruned-L{self.layers}"

    def as_text(self) -> str:
        return f"layers={self.layers},steps={self.steps},budget={self.budget_s:g}"


def parse_prune(value: str | None) -> PruneSpec | None:
    """``"layers=4"`` → PruneSpec(4); None/"" → None; InputError on anything else."""
    if not value:
        return None
    fields: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not _SPEC.fullmatch(part):
            raise InputError(f"--prune takes layers=K[,steps=N][,budget=SECONDS], not {value!r}")
        key, _, num = part.partition("=")
        if key in fields:
            raise InputError(f"--prune names {key} twice")
        fields[key] = num
    unknown = set(fields) - {"layers", "steps", "budget"}
    if unknown or "layers" not in fields:
        raise InputError(f"--prune takes layers=K[,steps=N][,budget=SECONDS], not {value!r}")
    try:
        layers = int(fields["layers"])
        steps = int(fields.get("steps", DEFAULT_STEPS))
        budget = round(float(fields.get("budget", DEFAULT_BUDGET_S)), 1)  # canonical text
    except ValueError as exc:
        raise InputError(f"--prune {value!r}: {exc}") from exc
    return check_prune(PruneSpec(layers, steps, budget))


def check_prune(spec: PruneSpec) -> PruneSpec:
    if not 1 <= spec.layers <= 48:
        raise InputError("--prune layers must be between 1 and 48")
    if not 0 <= spec.steps <= 100_000:
        raise InputError("--prune steps must be between 0 and 100000")
    if not (math.isfinite(spec.budget_s) and 0 <= spec.budget_s <= MAX_BUDGET_S):
        raise InputError(f"--prune budget must be between 0 and {MAX_BUDGET_S:g} seconds")
    return spec
