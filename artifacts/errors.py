"""One exception hierarchy for everything Shipyard raises on purpose.

Callers catch :class:`ShipyardError` (or a branch of it); every message says what is wrong
and, where there is one, what to do about it. The tree, like httpx's, is documented here:

    ShipyardError
    ├── ManifestError                 manifest.json is unreadable or violates schema 1
    │   └── SchemaVersionError        written by a newer Shipyard
    ├── BundleError                   a bundle directory is not what its manifest says
    │   ├── UnsafePathError           "..", absolute path, symlink, odd name in the file list
    │   ├── MissingFileError
    │   ├── UnlistedFileError
    │   ├── SizeMismatchError         truncated or padded file
    │   ├── DigestMismatchError       same size, different bytes
    │   └── BundleExistsError         refusing to overwrite
    ├── SignatureError
    │   ├── MissingSignatureError
    │   ├── UntrustedKeyError
    │   └── BadSignatureError         manifest edited after signing, or forged
    ├── KeyFileError                  unreadable / wrong type of key file
    ├── InputError                    bad user input (files, options, datasets)
    │   └── InvalidNameError          model / channel / target name outside the allowed alphabet
    ├── CompatibilityError            no bundle of a version can run on a node
    └── RegistryError                 talking to the central service
        ├── RegistryUnavailableError  connection refused / timed out / 5xx
        ├── AuthError                 401 / 403
        ├── NotFoundError             404
        └── ConflictError             409 (immutable version, concurrent push)
"""

from __future__ import annotations


class ShipyardError(Exception):
    """Base class of every deliberate Shipyard error."""


class ManifestError(ShipyardError):
    """manifest.json cannot be decoded or does not follow the schema."""


class SchemaVersionError(ManifestError):
    """The manifest declares a schema_version this Shipyard does not understand."""


class BundleError(ShipyardError):
    """A bundle directory does not match its manifest."""


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


class BundleExistsError(BundleError):
    """The destination already holds a bundle and overwriting was not asked for."""


class SignatureError(ShipyardError):
    """The manifest signature is missing, untrusted or invalid."""


class MissingSignatureError(SignatureError):
    """The bundle is not signed but a trusted signature is required."""


class UntrustedKeyError(SignatureError):
    """The manifest is signed by a key that is not in the trusted set."""


class BadSignatureError(SignatureError):
    """The signature does not match the manifest bytes."""


class KeyFileError(ShipyardError):
    """A key file cannot be read or holds the wrong kind of key."""


class InputError(ShipyardError):
    """User input (a file, an option, a dataset) is invalid."""


class InvalidNameError(InputError):
    """A model, channel or target name is outside the allowed alphabet."""


class CompatibilityError(ShipyardError):
    """No bundle of a version can run on this node; the message lists why for each."""


class RegistryError(ShipyardError):
    """The central registry answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnavailableError(RegistryError):
    """Connection refused, timed out, or the server failed (5xx)."""


class AuthError(RegistryError):
    """Missing token (401) or a token without the needed scope (403)."""


class NotFoundError(RegistryError):
    """The model, version, channel, blob or build does not exist."""


class ConflictError(RegistryError):
    """The write conflicts with immutable state (e.g. different bytes for a pushed bundle)."""
