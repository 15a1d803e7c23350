"""Publishing a version: stamp the version number into each manifest, sign it, push.

One code path for ``artifact push``, the build service's finaliser (``stamp`` only: it
registers through its own service layer), the benchmarks and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from artifacts.bundle import VerifiedBundle
from artifacts.client import Progress, RegistryClient
from artifacts.errors import InputError
from artifacts.manifest import Manifest, decode, encode
from artifacts.signing import SigningKey
from artifacts.wire import BundleInfo


def stamp(manifest: Manifest | bytes, version: int, key: SigningKey) -> tuple[bytes, str]:
    """``manifest`` with ``model.version`` set and signed by ``key``: (manifest bytes, signature)."""
    m = decode(manifest) if isinstance(manifest, bytes) else manifest
    stamped = msgspec.structs.replace(
        m, model=msgspec.structs.replace(m.model, version=version), signing_key_id=key.key_id
    )
    raw = encode(stamped)
    return raw, key.sign(raw).decode()


@dataclass(frozen=True)
class Published:
    model: str
    version: int
    bundles: list[tuple[BundleInfo, bool]]  # (info, newly created)


def _one_model_version(bundles: list[VerifiedBundle], model: str | None) -> tuple[str, int]:
    if not bundles:
        raise InputError("nothing to publish: no bundles")
    names = {b.manifest.model.name for b in bundles}
    if model is not None and names != {model}:
        raise InputError(f"bundles are for {', '.join(sorted(names))}, not {model!r}")
    if len(names) != 1:
        raise InputError(f"bundles are for several models ({', '.join(sorted(names))})")
    versions = {b.manifest.model.version for b in bundles}
    if len(versions) != 1:
        raise InputError(
            f"bundles carry different versions {sorted(versions)}; push them separately"
        )
    return names.pop(), versions.pop()


def publish_version(
    client: RegistryClient,
    bundles: list[VerifiedBundle],
    *,
    model: str | None = None,
    key: SigningKey | None = None,
    notes: str = "",
    progress: Progress | None = None,
) -> Published:
    """Upload ``bundles`` (one model) as a new version, or into the version they carry.

    Bundles built locally carry version 0 (unassigned): with ``key`` a new version is
    allocated and every manifest is stamped and re-signed. Blobs go first (content-addressed,
    independent of the version), so a failed upload leaves no empty version behind and a
    retry skips what already arrived.
    """
    name, carried = _one_model_version(bundles, model)
    if carried == 0 and key is None:
        raise InputError(
            "these bundles have no version yet: pass --key (or set SHIPYARD_KEY) to stamp and sign it"
        )
    for b in bundles:
        for entry in b.manifest.files:
            client.upload_blob(entry.sha256, b.file(entry.path), progress)
    if carried == 0:
        assert key is not None
        number = client.create_version(
            name, source_digest=bundles[0].manifest.model.source_digest, notes=notes
        )
        documents = [stamp(b.manifest, number, key) for b in bundles]
    else:
        number = carried
        documents = [(b.manifest_bytes, b.signature) for b in bundles]
    results = [
        client.put_bundle(name, number, b.manifest.target.id, raw, sig)
        for b, (raw, sig) in zip(bundles, documents, strict=True)
    ]
    return Published(model=name, version=number, bundles=results)
