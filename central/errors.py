"""Service errors (branches of the Shipyard hierarchy) and their HTTP status codes."""

from __future__ import annotations

from artifacts.errors import (
    AuthError,
    BundleError,
    ConflictError,
    InputError,
    ManifestError,
    NotFoundError,
    RegistryError,
    ShipyardError,
    SignatureError,
)


class Unauthorized(AuthError):
    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, status=401)


class Forbidden(AuthError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=403)


class QualityGateRefused(ConflictError):
    """Promotion refused because a bundle's quality gate did not pass."""

    def __init__(self, message: str, failing: dict) -> None:
        super().__init__(message, status=409)
        self.failing = failing


class Unprocessable(InputError):
    """Well-formed but unacceptable (tampered bundle, mismatched manifest, missing blob)."""


def status_for(exc: ShipyardError) -> int:
    if isinstance(exc, RegistryError) and exc.status:
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, SignatureError | BundleError | ManifestError | Unprocessable):
        return 422
    if isinstance(exc, InputError):
        return 400
    return 500


def not_found(what: str) -> NotFoundError:
    return NotFoundError(f"{what} not found", status=404)


def conflict(message: str) -> ConflictError:
    return ConflictError(message, status=409)
