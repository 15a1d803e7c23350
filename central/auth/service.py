"""Issue, authenticate, list and revoke bearer tokens.

Lookups are cached briefly: a revoked or expired token stops working within
``TOKEN_CACHE_S`` on every replica (at once on the replica that revoked it). A token may be
bound to one enrolled build worker: it then acts as that worker and no other; and to a set of
catalogs: its catalog routes then reach those catalogs and no other (an embed worker's token).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from artifacts.embed_queue import check_catalog_name
from artifacts.errors import AuthError, ForbiddenError, InputError, NotFoundError
from artifacts.names import check_name
from artifacts.wire import TokenInfo
from central.audit.service import AuditLog
from central.auth import tokens
from central.auth.models import Token
from central.db import Database, iso, utcnow

TOKEN_CACHE_S = 2.0
MAX_CACHED = 10_000
MAX_EXPIRY_S = 10 * 365 * 86400
MAX_BOUND_CATALOGS = 64
# A catalog-bound token holds only scopes whose writes stay inside catalog routes: ``build``,
# ``push``, ``promote`` and ``admin`` reach routes a binding does not cover (models, channels).
BOUND_SCOPES = frozenset({"embed", "pull"})


@dataclass(frozen=True)
class Principal:
    """Who is asking (the token's name), what its scopes allow, and the build worker it is
    bound to (None: not a worker credential)."""

    name: str
    scopes: frozenset[str]
    worker: str | None = None
    internal: bool = False  # central acting on its own (e.g. a catalog run), never a token
    catalogs: frozenset[str] | None = None  # bound to these catalogs (None: any)
    token_id: int | None = None  # the token's row (None: central itself, the CLI)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ForbiddenError(f"token {self.name!r} lacks the {scope!r} scope")

    def require_catalog(self, name: str) -> None:
        """A token bound to catalogs (an embed worker's, say) acts on those alone."""
        if self.catalogs is not None and name not in self.catalogs:
            raise ForbiddenError(
                f"token {self.name!r} is bound to catalog(s) {', '.join(sorted(self.catalogs))}, "
                f"not {name!r}"
            )

    def require_worker(self, name: str) -> None:
        """Only the credential enrolled for worker ``name`` may act as it."""
        if self.worker is None:
            raise ForbiddenError(
                f"token {self.name!r} is not an enrolled worker's credential "
                "(`central workers enroll` issues one)"
            )
        if self.worker != name:
            raise ForbiddenError(
                f"token {self.name!r} belongs to worker {self.worker!r}, not {name!r}"
            )


class TokenService:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit
        self._cache: dict[str, tuple[float, Principal, dt.datetime | None]] = {}

    async def authenticate(self, header: str | None) -> Principal:
        if not header or not header.lower().startswith("bearer "):
            raise AuthError()
        digest = tokens.hash_token(header[7:].strip())
        cached = self._cache.get(digest)
        now = time.monotonic()
        fresh = cached is not None and now - cached[0] < TOKEN_CACHE_S
        if fresh and (cached[2] is None or cached[2] > utcnow()):  # type: ignore[index]
            return cached[1]  # type: ignore[index]
        async with self.db.session() as s:
            row = (
                await s.execute(select(Token).where(Token.token_hash == digest))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise AuthError("invalid or revoked bearer token")
        if row.expires_at is not None and row.expires_at <= utcnow():
            raise AuthError(f"bearer token {row.name!r} expired at {iso(row.expires_at)}")
        principal = Principal(
            row.name,
            tokens.granted(row.scopes),
            row.worker,
            catalogs=frozenset(row.catalogs) if row.catalogs is not None else None,
            token_id=row.id,
        )
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (now, principal, row.expires_at)
        return principal

    async def create(
        self,
        name: str,
        scopes: list[str],
        actor: str = "cli",
        *,
        worker: str | None = None,
        expires_in_s: float | None = None,
        catalogs: list[str] | None = None,
    ) -> str:
        check_name(name, "token name")
        scopes = tokens.parse_scopes(scopes)
        if catalogs is not None:
            if not catalogs or len(catalogs) > MAX_BOUND_CATALOGS:
                raise InputError(
                    f"a token is bound to 1 to {MAX_BOUND_CATALOGS} catalogs, not {len(catalogs)}"
                )
            catalogs = sorted({check_catalog_name(c) for c in catalogs})
            wide = sorted(set(scopes) - BOUND_SCOPES)
            if wide:
                raise InputError(
                    f"a catalog-bound token holds only {', '.join(sorted(BOUND_SCOPES))}: "
                    f"{', '.join(wide)} reach routes outside its catalogs (issue an unbound token)"
                )
        expires_at = None
        if expires_in_s is not None:
            if not 0 < expires_in_s <= MAX_EXPIRY_S:
                raise InputError(f"expires_in_s must be between 1 and {MAX_EXPIRY_S}")
            expires_at = utcnow() + dt.timedelta(seconds=expires_in_s)
        token = tokens.new_token(scopes[0])
        async with self.db.transaction() as s:
            s.add(
                Token(
                    name=name,
                    token_hash=tokens.hash_token(token),
                    scopes=scopes,
                    worker=worker,
                    expires_at=expires_at,
                    catalogs=catalogs,
                )
            )
            detail = f"expires {iso(expires_at)}" if expires_at else ""
            if catalogs is not None:
                detail = f"catalogs {','.join(catalogs)}" + (f"; {detail}" if detail else "")
            self.audit.record(
                s, actor, "token.create", f"{name} [{','.join(scopes)}]", detail=detail
            )
        return token

    async def revoke(self, token_id: int, actor: str) -> TokenInfo:
        async with self.db.transaction() as s:
            row = await s.get(Token, token_id)
            if row is None:
                raise NotFoundError(f"token #{token_id} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self.audit.record(s, actor, "token.revoke", f"#{token_id} {row.name}")
            self._cache.pop(row.token_hash, None)
            return _info(row)

    async def revoke_worker_tokens(self, worker: str, actor: str) -> int:
        """Revoke every credential bound to ``worker`` (a disabled or re-enrolled worker)."""
        async with self.db.transaction() as s:
            rows = (
                await s.execute(
                    select(Token).where(Token.worker == worker, Token.revoked_at.is_(None))
                )
            ).scalars()
            n = 0
            for row in rows:
                row.revoked_at = utcnow()
                self._cache.pop(row.token_hash, None)
                n += 1
            if n:
                self.audit.record(s, actor, "token.revoke", f"{n} token(s) of worker {worker}")
            return n

    async def list(self) -> list[TokenInfo]:
        async with self.db.session() as s:
            rows = (await s.execute(select(Token).order_by(Token.id))).scalars()
            return [_info(r) for r in rows]

    async def count(self) -> int:
        async with self.db.session() as s:
            return int((await s.execute(select(func.count(Token.id)))).scalar_one())


def _info(row: Token) -> TokenInfo:
    state = "revoked" if row.revoked_at else "active"
    if state == "active" and row.expires_at is not None and row.expires_at <= utcnow():
        state = "expired"
    return TokenInfo(
        id=row.id,
        name=row.name,
        scopes=list(row.scopes),
        worker=row.worker,
        catalogs=list(row.catalogs) if row.catalogs is not None else None,
        created_at=iso(row.created_at),
        expires_at=iso(row.expires_at),
        revoked_at=iso(row.revoked_at),
        state=state,
    )
