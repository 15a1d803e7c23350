"""Edge errors: branches of the one Shipyard hierarchy (:mod:`artifacts.errors`), each with
the HTTP status it maps to. Overload, not-ready and deadline errors are shared there."""

from __future__ import annotations

from artifacts.errors import InputError, NotFoundError, ShipyardError


class BadRequest(InputError):
    """A request the API cannot serve as sent (400)."""


class UnknownModel(NotFoundError):
    """The request names a model this node does not serve (404)."""


class BackendUnavailable(ShipyardError):
    """A backend cannot run on this node (library or device missing)."""

    status = 503


class BackendFailure(ShipyardError):
    """A loaded backend failed at run time and no fallback could take over."""

    status = 503
