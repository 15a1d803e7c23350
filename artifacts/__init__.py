"""Shipyard's artifact contract: manifests, targets, digests, signatures, bundles, the client.

Light dependencies only (msgspec, httpx, cryptography, packaging; numpy + tokenizers for the
shared tokenise/post-process path in :mod:`artifacts.textproc`): every other part of Shipyard,
including the torch-free edge runtime, imports this package. The public API is re-exported
here; the ``artifact`` CLI and the demo live apart from it, in :mod:`artifacts.cli`.
"""

from artifacts.bundle import (
    VerifiedBundle,
    check_relpath,
    read_manifest,
    restamp_bundle,
    verify_bundle,
    write_bundle,
)
from artifacts.client import RegistryClient
from artifacts.digests import is_digest, sha256_bytes, sha256_file
from artifacts.errors import *  # noqa: F403 - the whole hierarchy is public
from artifacts.errors import __all__ as _errors
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest, decode, encode
from artifacts.names import check_name
from artifacts.publish import Published, publish_version
from artifacts.signing import (
    SigningKey,
    TrustedKeys,
    generate_keypair,
    key_id_of,
    load_public_key,
    load_signing_key,
)
from artifacts.states import (
    AuditOutcome,
    BuildState,
    CandidateStatus,
    ChannelAction,
    EventKind,
    JobState,
    ServeState,
)
from artifacts.targets import (
    BUILDABLE_TARGETS,
    CPU_TARGETS,
    GPU_TARGETS,
    TARGETS,
    NodeCapabilities,
    Ranking,
    SelectionPolicy,
    check_requirements,
    rank_bundles,
)

__version__ = "0.1.0"
__all__ = [
    "BUILDABLE_TARGETS",
    "CPU_TARGETS",
    "GPU_TARGETS",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "TARGETS",
    "AuditOutcome",
    "BuildState",
    "CandidateStatus",
    "ChannelAction",
    "EventKind",
    "JobState",
    "Manifest",
    "NodeCapabilities",
    "Published",
    "Ranking",
    "RegistryClient",
    "SelectionPolicy",
    "ServeState",
    "SigningKey",
    "TrustedKeys",
    "VerifiedBundle",
    "check_name",
    "check_relpath",
    "check_requirements",
    "decode",
    "encode",
    "generate_keypair",
    "is_digest",
    "key_id_of",
    "load_public_key",
    "load_signing_key",
    "publish_version",
    "rank_bundles",
    "read_manifest",
    "restamp_bundle",
    "sha256_bytes",
    "sha256_file",
    "verify_bundle",
    "write_bundle",
    *_errors,
]
