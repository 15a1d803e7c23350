"""Models, versions, bundles and resolve."""

from __future__ import annotations

import base64

from litestar import Request, Response, get, post, put

from artifacts.digests import unb64
from artifacts.errors import Unprocessable
from artifacts.wire import (
    BundleInfo,
    CreateVersion,
    ModelInfo,
    PutBundle,
    ResolveRequest,
    ResolveResponse,
    VersionInfo,
    VersionRef,
)
from central.auth.guard import needs, principal_of, pull
from central.catalogs.service import CatalogService
from central.registry.service import BundleUpload, RegistryService


@get("/v1/models", **pull())
async def list_models(registry: RegistryService) -> list[ModelInfo]:
    return await registry.list_models()


@post("/v1/models/{model:str}/versions", status_code=201, **needs("push"))
async def create_version(
    registry: RegistryService, request: Request, model: str, data: CreateVersion | None = None
) -> VersionRef:
    """Allocate the next version number of a model (created on first use)."""
    data = data or CreateVersion()
    number = await registry.create_version(
        model, principal_of(request).name, source_digest=data.source_digest, notes=data.notes
    )
    return VersionRef(model=model, version=number)


@get("/v1/models/{model:str}/versions", **pull())
async def list_versions(registry: RegistryService, model: str) -> list[VersionInfo]:
    return await registry.list_versions(model)


@get("/v1/models/{model:str}/versions/{version:int}", **pull())
async def get_version(registry: RegistryService, model: str, version: int) -> VersionInfo:
    return await registry.get_version(model, version)


@put("/v1/models/{model:str}/versions/{version:int}/bundles/{target:str}", **needs("push"))
async def put_bundle(
    registry: RegistryService,
    request: Request,
    model: str,
    version: int,
    target: str,
    data: PutBundle,
) -> Response[BundleInfo]:
    """Register a bundle whose files were uploaded as blobs. Verified: signature by a trusted
    publisher key, manifest names this model/version/target, every file's blob present with
    the right size. Identical re-push: 200; different bytes: 409."""
    upload = BundleUpload(
        model=model,
        version=version,
        target=target,
        manifest=unb64(data.manifest, "manifest", Unprocessable),
        signature=data.signature,
    )
    info, created = await registry.put_bundle(upload, principal_of(request).name)
    return Response(info, status_code=201 if created else 200)


@get("/v1/models/{model:str}/versions/{version:int}/bundles/{target:str}", **pull())
async def get_bundle(registry: RegistryService, model: str, version: int, target: str) -> PutBundle:
    """The bundle's manifest.json bytes (base64) and manifest.sig, exactly as pushed."""
    raw, signature = await registry.bundle_document(model, version, target)
    return PutBundle(manifest=base64.b64encode(raw).decode(), signature=signature)


@post("/v1/resolve", status_code=200, **needs("pull"))
async def resolve(
    registry: RegistryService,
    catalog_service: CatalogService,
    request: Request,
    data: ResolveRequest,
) -> ResolveResponse:
    """A node's capabilities in; the version, eligible bundles best-first, and why every
    other bundle is excluded out."""
    await catalog_service.require_readable(principal_of(request), data.model)
    return await registry.resolve(data)


handlers = [
    list_models,
    create_version,
    list_versions,
    get_version,
    put_bundle,
    get_bundle,
    resolve,
]
