"""Tokens (admin): issue (shown once), list, revoke."""

from __future__ import annotations

from litestar import Request, get, post

from artifacts.wire import CreateToken, TokenCreated, TokenInfo
from central.auth.guard import needs, principal_of
from central.auth.service import TokenService


@post("/v1/tokens", status_code=201, **needs("admin"))
async def create_token(tokens: TokenService, request: Request, data: CreateToken) -> TokenCreated:
    token = await tokens.create(
        data.name,
        data.scopes,
        actor=principal_of(request).name,
        expires_in_s=data.expires_in_s,
        catalogs=data.catalogs,
    )
    bound = sorted(set(data.catalogs)) if data.catalogs is not None else None  # as stored
    return TokenCreated(name=data.name, scopes=data.scopes, token=token, catalogs=bound)


@get("/v1/tokens", **needs("admin", body=None))
async def list_tokens(tokens: TokenService) -> list[TokenInfo]:
    """Every token's name, scopes, bound worker, expiry and state (never the secret)."""
    return await tokens.list()


@post("/v1/tokens/{token_id:int}/revoke", status_code=200, **needs("admin", body=None))
async def revoke_token(tokens: TokenService, request: Request, token_id: int) -> TokenInfo:
    """Revoked at once on this replica, within a couple of seconds on the others."""
    return await tokens.revoke(token_id, principal_of(request).name)


handlers = [create_token, list_tokens, revoke_token]
