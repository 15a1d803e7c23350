"""Edge errors: branches of the one Shipyard hierarchy, each with the HTTP status it maps to."""

from __future__ import annotations

from artifacts.errors import InputError, ShipyardError


class EdgeError(ShipyardError):
    status = 500


class BadRequest(InputError, EdgeError):
    status = 400


class UnknownModel(EdgeError):
    status = 404


class NotReady(EdgeError):
    """No verified, smoke-checked backend is serving this model (yet)."""

    status = 503


class Overloaded(EdgeError):
    """The admission budget is full: 429 with Retry-After."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(EdgeError):
    status = 504


class BackendUnavailable(EdgeError):
    """A backend cannot run on this node (library or device missing)."""


class BackendFailure(EdgeError):
    """A loaded backend failed at run time (triggers failover)."""
