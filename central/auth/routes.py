"""``POST /v1/tokens`` (admin): issue a token; it is shown once."""

from __future__ import annotations

from litestar import Request, post

from artifacts.wire import CreateToken, TokenCreated
from central.auth.guard import needs, principal_of
from central.auth.service import TokenService


@post("/v1/tokens", status_code=201, **needs("admin"))
async def create_token(tokens: TokenService, request: Request, data: CreateToken) -> TokenCreated:
    token = await tokens.create(data.name, data.scopes, actor=principal_of(request).name)
    return TokenCreated(name=data.name, scopes=data.scopes, token=token)


handlers = [create_token]
