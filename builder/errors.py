"""Builder errors: branches of the one Shipyard hierarchy (see artifacts.errors)."""

from __future__ import annotations

from artifacts.errors import InputError, ShipyardError


class BuildError(ShipyardError):
    """A build step failed; the message names the step and the cause."""


class ModelDirError(InputError):
    """The model directory is missing, incomplete or of an unsupported architecture."""


class DatasetError(InputError):
    """A calibration/eval JSONL file is malformed (the message has the line number)."""


class ExportError(BuildError):
    """ONNX export failed or the exported graph does not match the torch model."""


class TargetBuildError(BuildError):
    """One target could not be built or could not pass its gate (others may still succeed)."""
