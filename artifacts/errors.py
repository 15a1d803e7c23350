"""One exception hierarchy for everything Shipyard raises on purpose, in every package.

Callers catch :class:`ShipyardError` (or a branch of it); every message says what is wrong
and, where there is one, what to do about it. Each class declares once the HTTP status it
maps to (``status``), so central, the edge and the client agree on it; the client raises the
same classes for the statuses it receives. The tree, like httpx's, is documented here:

    ShipyardError                        500
    ├── ManifestError                    422  manifest.json is unreadable or violates schema 1
    │   └── SchemaVersionError           422  written by a newer Shipyard
    ├── BundleError                      422  a bundle directory is not what its manifest says
    │   ├── UnsafePathError                   "..", absolute path, symlink, odd name in the file list
    │   ├── MissingFileError
    │   ├── UnlistedFileError
    │   ├── SizeMismatchError                 truncated or padded file
    │   ├── DigestMismatchError               same size, different bytes
    │   ├── WrongBundleError                  another model/version/target than asked for
    │   └── BundleExistsError                 refusing to overwrite
    ├── SignatureError                   422
    │   ├── MissingSignatureError
    │   ├── UntrustedKeyError
    │   └── BadSignatureError                 manifest edited after signing, or forged
    ├── KeyFileError                     400  unreadable / wrong type of key file
    ├── InputError                       400  bad input (files, options, datasets, requests)
    │   ├── InvalidNameError             422  model / channel / target name outside the alphabet
    │   ├── Unprocessable                422  well-formed but unacceptable (tampered upload …)
    │   ├── PayloadTooLarge              413  a body, text or request over a configured limit
    │   └── UnsupportedMediaType         415
    ├── CompatibilityError               409  no bundle of a version can run on a node
    ├── NotFoundError                    404  the model, version, channel, blob or build does not exist
    ├── ConflictError                    409  immutable state, concurrent push, lease lost
    │   └── QualityGateRefused           409  promotion refused: a quality gate did not pass
    ├── AuthError                        401  missing, invalid, revoked or expired token
    │   └── ForbiddenError               403  a valid token without the needed scope or identity
    ├── Overloaded                       429  admission budget full (carries retry_after_s)
    ├── NotReady                         503  nothing verified is serving (yet)
    ├── DeadlineExceeded                 504
    └── RegistryError                    502  the registry answered something the API does not promise
        └── RegistryUnavailableError     503  connection refused / timed out / 5xx
"""

from __future__ import annotations

from typing import Any, ClassVar


class ShipyardError(Exception):
    """Base class of every deliberate Shipyard error."""

    status: ClassVar[int] = 500

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:  # a client-side error carries the status it received
            self.status = status  # type: ignore[misc]

    @property
    def title(self) -> str:
        return type(self).__name__

    def problem_extra(self) -> dict[str, Any]:
        """Machine-readable details for the problem+json body (override where useful)."""
        return {}


class ManifestError(ShipyardError):
    """manifest.json cannot be decoded or does not follow the schema."""

    status = 422


class SchemaVersionError(ManifestError):
    """The manifest declares a schema_version this Shipyard does not understand."""


class BundleError(ShipyardError):
    """A bundle directory does not match its manifest."""

    status = 422


class UnsafePathError(BundleError):
    """A path in the bundle could escape it (.., absolute, symlink, device file)."""


class MissingFileError(BundleError):
    """A file listed in the manifest is absent."""


class UnlistedFileError(BundleError):
    """The bundle holds a file its manifest does not list."""


class SizeMismatchError(BundleError):
    """A file's size differs from the manifest (truncated or padded)."""


class DigestMismatchError(BundleError):
    """A file's sha256 differs from the manifest (corrupted or tampered)."""


class WrongBundleError(BundleError):
    """A bundle names another model, version or target than the one asked for."""


class BundleExistsError(BundleError):
    """The destination already holds a bundle and overwriting was not asked for."""

    status = 409


class SignatureError(ShipyardError):
    """The manifest signature is missing, untrusted or invalid."""

    status = 422


class MissingSignatureError(SignatureError):
    """The bundle is not signed but a trusted signature is required."""


class UntrustedKeyError(SignatureError):
    """The manifest is signed by a key that is not in the trusted set."""


class BadSignatureError(SignatureError):
    """The signature does not match the manifest bytes."""


class KeyFileError(ShipyardError):
    """A key file cannot be read or holds the wrong kind of key."""

    status = 400


class InputError(ShipyardError):
    """Input (a file, an option, a dataset, a request) is invalid."""

    status = 400


class InvalidNameError(InputError):
    """A model, channel or target name is outside the allowed alphabet (422: well-formed
    JSON or path, unacceptable value — e.g. a trailing newline)."""

    status = 422


class Unprocessable(InputError):
    """Well-formed but unacceptable (tampered bundle, mismatched manifest, missing blob)."""

    status = 422


class PayloadTooLarge(InputError):
    """A body, a text or a whole request exceeds a configured limit (the message names it)."""

    status = 413


class UnsupportedMediaType(InputError):
    status = 415


class CompatibilityError(ShipyardError):
    """No bundle of a version can run on this node; the message lists why for each."""

    status = 409


class NotFoundError(ShipyardError):
    """The model, version, channel, blob, build or served model does not exist."""

    status = 404


class ConflictError(ShipyardError):
    """The write conflicts with immutable state (e.g. different bytes for a pushed bundle)."""

    status = 409


class QualityGateRefused(ConflictError):
    """Promotion refused because a bundle's quality gate did not pass."""

    def __init__(self, message: str, failing: dict[str, Any]) -> None:
        super().__init__(message)
        self.failing = failing

    def problem_extra(self) -> dict[str, Any]:
        return {"failing": self.failing}


class AuthError(ShipyardError):
    """Missing, invalid, revoked or expired bearer token (401)."""

    status = 401

    def __init__(self, message: str = "missing or invalid bearer token", **kw: Any) -> None:
        super().__init__(message, **kw)


class ForbiddenError(AuthError):
    """A valid token that lacks the scope (or the identity) the action needs (403)."""

    status = 403


class Overloaded(ShipyardError):
    """The admission budget is full: 429 with Retry-After."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ShipyardError):
    """No verified, smoke-checked backend is serving (yet), or a dependency is down."""

    status = 503


class DeadlineExceeded(ShipyardError):
    status = 504


class DiskFullError(ShipyardError):
    """No space left where a download or bundle was being written (what was partial is removed)."""

    status = 507


class RegistryError(ShipyardError):
    """The central registry answered something its API does not promise."""

    status = 502


class RegistryUnavailableError(RegistryError):
    """Connection refused, timed out, or the server failed (5xx)."""

    status = 503


# The client raises the class of the status it received (a status not listed: RegistryError).
BY_STATUS: dict[int, type[ShipyardError]] = {
    400: InputError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
}

__all__ = [
    "BY_STATUS",
    "AuthError",
    "BadSignatureError",
    "BundleError",
    "BundleExistsError",
    "CompatibilityError",
    "ConflictError",
    "DeadlineExceeded",
    "DigestMismatchError",
    "DiskFullError",
    "ForbiddenError",
    "InputError",
    "InvalidNameError",
    "KeyFileError",
    "ManifestError",
    "MissingFileError",
    "MissingSignatureError",
    "NotFoundError",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "QualityGateRefused",
    "RegistryError",
    "RegistryUnavailableError",
    "SchemaVersionError",
    "ShipyardError",
    "SignatureError",
    "SizeMismatchError",
    "UnlistedFileError",
    "Unprocessable",
    "UnsafePathError",
    "UnsupportedMediaType",
    "UntrustedKeyError",
    "WrongBundleError",
]
