"""Publishing a version: allocate its number, stamp it into each manifest, re-sign, push.

One code path for ``artifact push``, the benchmarks and the tests. (Bundles built by the
build service never pass through here: the enrolled worker that built them stamped and
signed them with its own key.)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from artifacts.bundle import VerifiedBundle, restamp_bundle, verify_bundle
from artifacts.client import Progress, RegistryClient
from artifacts.errors import InputError
from artifacts.signing import SigningKey
from artifacts.wire import BundleInfo


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
    allocated and every bundle is stamped with it and re-signed. Blobs go first (content-addressed, independent of the version), so a failed
    upload leaves no empty version behind and a retry skips what already arrived.
    """
    name, carried = _one_model_version(bundles, model)
    if carried == 0 and key is None:
        raise InputError(
            "these bundles have no version yet: pass --key (or set SHIPYARD_KEY) to stamp and sign it"
        )
    for b in bundles:
        for entry in b.manifest.files:
            client.upload_blob(entry.sha256, b.file(entry.path), progress)
    if carried != 0:
        return Published(name, carried, [client.push_bundle(b) for b in bundles])
    assert key is not None
    number = client.create_version(
        name, source_digest=bundles[0].manifest.model.source_digest, notes=notes
    )
    with tempfile.TemporaryDirectory(prefix="shipyard-push-") as tmp:
        results = []
        for b in bundles:
            dest = Path(tmp) / b.manifest.bundle_key()
            restamp_bundle(b.path, dest, version=number, key=key)
            results.append(client.push_bundle(verify_bundle(dest, None)))
    return Published(name, number, results)
