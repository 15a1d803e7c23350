"""Token format and scope rules (pure): random tokens, shown once, stored as sha256 hashes."""

from __future__ import annotations

import secrets

from artifacts.digests import sha256_bytes
from artifacts.errors import InputError

SCOPES = ("pull", "push", "promote", "build", "embed", "admin")
# A scope grants itself plus these (admin grants everything).
IMPLIES: dict[str, frozenset[str]] = {
    "pull": frozenset({"pull"}),
    "push": frozenset({"push", "pull"}),
    "promote": frozenset({"promote", "pull"}),
    "build": frozenset({"build", "push", "pull"}),
    "embed": frozenset({"embed", "pull"}),  # an embed worker: catalog vectors back to central
    "admin": frozenset(SCOPES),
}


def new_token(scope: str) -> str:
    return f"shp_{scope}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return sha256_bytes(token.encode())


def granted(scopes: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for s in scopes:
        out |= IMPLIES.get(s, frozenset())
    return frozenset(out)


def parse_scopes(value: str | list[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    scopes = [s.strip() for s in items if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InputError(
            f"unknown scope(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SCOPES)}"
        )
    return scopes
