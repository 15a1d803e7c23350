"""Issue and authenticate bearer tokens. Lookups are cached briefly (a revoked token stops
working within ``TOKEN_CACHE_S``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select

from artifacts.errors import AuthError, ForbiddenError
from artifacts.names import check_name
from central.audit.service import AuditLog
from central.auth import tokens
from central.auth.models import Token
from central.db import Database

TOKEN_CACHE_S = 2.0
MAX_CACHED = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is asking (the token's name) and what its scopes allow."""

    name: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ForbiddenError(f"token {self.name!r} lacks the {scope!r} scope")


class TokenService:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, header: str | None) -> Principal:
        if not header or not header.lower().startswith("bearer "):
            raise AuthError()
        token = header[7:].strip()
        cached = self._cache.get(token)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_S:
            return cached[1]
        async with self.db.session() as s:
            row = (
                await s.execute(select(Token).where(Token.token_hash == tokens.hash_token(token)))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise AuthError("invalid or revoked bearer token")
        principal = Principal(row.name, tokens.granted(row.scopes))
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (time.monotonic(), principal)
        return principal

    async def create(self, name: str, scopes: list[str], actor: str = "cli") -> str:
        check_name(name, "token name")
        scopes = tokens.parse_scopes(scopes)
        token = tokens.new_token(scopes[0])
        async with self.db.transaction() as s:
            s.add(Token(name=name, token_hash=tokens.hash_token(token), scopes=scopes))
            self.audit.record(s, actor, "token.create", f"{name} [{','.join(scopes)}]")
        return token

    async def count(self) -> int:
        async with self.db.session() as s:
            return int((await s.execute(select(func.count(Token.id)))).scalar_one())
