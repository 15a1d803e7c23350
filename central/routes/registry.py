"""Models, versions, bundles, channels, resolve, audit, tokens."""

from __future__ import annotations

import base64

from litestar import Request, Response, get, post, put
from litestar.params import Parameter

from artifacts.wire import (
    AuditInfo,
    BundleInfo,
    ChannelInfo,
    CreateToken,
    CreateVersion,
    ModelInfo,
    Promote,
    PutBundle,
    ResolveRequest,
    ResolveResponse,
    TokenCreated,
    VersionInfo,
    VersionRef,
)
from central.routes.common import needs, principal_of, pull
from central.service import Service


@get("/v1/models", **pull())
async def list_models(service: Service) -> list[ModelInfo]:
    return await service.registry.list_models()


@post("/v1/models/{model:str}/versions", status_code=201, **needs("push"))
async def create_version(
    service: Service, request: Request, model: str, data: CreateVersion | None = None
) -> VersionRef:
    """Allocate the next version number of a model (created on first use)."""
    data = data or CreateVersion()
    number = await service.registry.create_version(
        model, principal_of(request).name, source_digest=data.source_digest, notes=data.notes
    )
    return VersionRef(model=model, version=number)


@get("/v1/models/{model:str}/versions", **pull())
async def list_versions(service: Service, model: str) -> list[VersionInfo]:
    return await service.registry.list_versions(model)


@get("/v1/models/{model:str}/versions/{version:int}", **pull())
async def get_version(service: Service, model: str, version: int) -> VersionInfo:
    return await service.registry.get_version(model, version)


@put("/v1/models/{model:str}/versions/{version:int}/bundles/{target:str}", **needs("push"))
async def put_bundle(
    service: Service, request: Request, model: str, version: int, target: str, data: PutBundle
) -> Response[BundleInfo]:
    """Register a bundle whose files were uploaded as blobs. Verified: signature by a trusted
    publisher key, manifest names this model/version/target, every file's blob present with
    the right size. Identical re-push: 200; different bytes: 409."""
    info, created = await service.registry.put_bundle(
        model, version, target, data.manifest, data.signature, principal_of(request).name
    )
    return Response(info, status_code=201 if created else 200)


@get("/v1/models/{model:str}/versions/{version:int}/bundles/{target:str}", **pull())
async def get_bundle(service: Service, model: str, version: int, target: str) -> PutBundle:
    """The bundle's manifest.json bytes (base64) and manifest.sig, exactly as pushed."""
    raw, signature = await service.registry.bundle_document(model, version, target)
    return PutBundle(manifest=base64.b64encode(raw).decode(), signature=signature)


@get("/v1/models/{model:str}/channels", **pull())
async def list_channels(service: Service, model: str) -> list[ChannelInfo]:
    return await service.registry.channels(model)


@get("/v1/models/{model:str}/channels/{channel:str}", **pull())
async def get_channel(service: Service, model: str, channel: str) -> ChannelInfo:
    return await service.registry.channel(model, channel)


@post("/v1/models/{model:str}/channels/{channel:str}/promote", status_code=200, **needs("promote"))
async def promote(
    service: Service, request: Request, model: str, channel: str, data: Promote
) -> ChannelInfo:
    """Point a channel at a version; refused (409, with the failing metrics) when a bundle's
    quality gate did not pass, unless an admin forces it."""
    return await service.registry.promote(
        model, channel, data.version, principal_of(request), force=data.force
    )


@post(
    "/v1/models/{model:str}/channels/{channel:str}/rollback",
    status_code=200,
    **needs("promote", body=None),
)
async def rollback(service: Service, request: Request, model: str, channel: str) -> ChannelInfo:
    """Return the channel to the version before its current one."""
    return await service.registry.rollback(model, channel, principal_of(request))


@post("/v1/resolve", status_code=200, **needs("pull"))
async def resolve(service: Service, data: ResolveRequest) -> ResolveResponse:
    """A node's capabilities in; the version, eligible bundles best-first, and why every
    other bundle is excluded out."""
    return await service.registry.resolve(data)


@get("/v1/audit", **needs("admin", body=None))
async def audit(
    service: Service,
    limit: int = Parameter(default=100, ge=1, le=1000),
    before: int | None = Parameter(default=None, ge=1),
) -> list[AuditInfo]:
    return await service.registry.audit_log(limit, before)


@post("/v1/tokens", status_code=201, **needs("admin"))
async def create_token(service: Service, request: Request, data: CreateToken) -> TokenCreated:
    token = await service.registry.create_token(
        data.name, data.scopes, actor=principal_of(request).name
    )
    return TokenCreated(name=data.name, scopes=data.scopes, token=token)


handlers = [
    list_models,
    create_version,
    list_versions,
    get_version,
    put_bundle,
    get_bundle,
    list_channels,
    get_channel,
    promote,
    rollback,
    resolve,
    audit,
    create_token,
]
