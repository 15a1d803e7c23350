"""Trusted publisher keys (admin, audited): list, trust, untrust — effective on every replica
within a couple of seconds, without a restart."""

from __future__ import annotations

from litestar import Request, Response, delete, get, post

from artifacts.wire import TrustedKeyInfo, TrustKey
from central.auth.guard import needs, principal_of
from central.keys.service import KeyTrust


@get("/v1/keys/trusted", **needs("admin", body=None))
async def list_trusted(key_trust: KeyTrust) -> list[TrustedKeyInfo]:
    return await key_trust.list()


@post("/v1/keys/trusted", **needs("admin"))
async def trust_key(
    key_trust: KeyTrust, request: Request, data: TrustKey
) -> Response[TrustedKeyInfo]:
    """201 when newly trusted, 200 when it already was."""
    info, created = await key_trust.trust(data.public_key, data.name, principal_of(request).name)
    return Response(info, status_code=201 if created else 200)


@delete("/v1/keys/trusted/{key_id:str}", status_code=200, **needs("admin", body=None))
async def untrust_key(key_trust: KeyTrust, request: Request, key_id: str) -> TrustedKeyInfo:
    """Bundles it signed stay registered (they were verified when pushed); new pushes signed
    by it are refused."""
    return await key_trust.untrust(key_id, principal_of(request).name)


handlers = [list_trusted, trust_key, untrust_key]
