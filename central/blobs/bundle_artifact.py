"""A registered bundle as an OCI artifact (ORAS conventions), for registries that hold blobs.

One image manifest per bundle, tagged ``<model>.v<version>.<bundle key>``: ``artifactType``
names Shipyard bundles, the config is the signed ``manifest.json`` itself, each bundle file
is a layer titled with its path (``org.opencontainers.image.title``, so ``oras pull`` writes
the bundle's directory), and the signature rides as an annotation. The manifest keeps the
blobs referenced, so the registry's own garbage collection never removes them.
"""

from __future__ import annotations

import re

from artifacts.manifest import Manifest

ARTIFACT_TYPE = "application/vnd.shipyard.bundle.v1"
CONFIG_MEDIA_TYPE = "application/vnd.shipyard.bundle.manifest.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.shipyard.bundle.file.v1"
SIGNATURE_ANNOTATION = "dev.shipyard.bundle.signature"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def bundle_tag(model: str, version: int, key: str) -> str:
    """``shop-embedder.v3.onnx-int8_pruned-L4`` (``+`` is not in the tag alphabet)."""
    return _TAG_UNSAFE.sub("_", f"{model}.v{version}.{key}")[:128]


def bundle_layers(manifest: Manifest) -> list[tuple[str, int, str, str]]:
    """(media type, size, digest, title) per bundle file, in the manifest's order."""
    return [(LAYER_MEDIA_TYPE, f.size, f.sha256, f.path) for f in manifest.files]


def bundle_annotations(manifest: Manifest, signature: str) -> dict[str, str]:
    return {
        SIGNATURE_ANNOTATION: signature,
        "org.opencontainers.image.title": f"{manifest.model.name} v{manifest.model.version}",
        "dev.shipyard.bundle.target": manifest.bundle_key(),
    }
