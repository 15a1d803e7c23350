"""Bearer tokens with scopes. Tokens are random, shown once, stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets

SCOPES = ("pull", "push", "promote", "build", "admin")
# A scope grants itself plus these (admin grants everything).
IMPLIES: dict[str, set[str]] = {
    "pull": {"pull"},
    "push": {"push", "pull"},
    "promote": {"promote", "pull"},
    "build": {"build", "push", "pull"},
    "admin": set(SCOPES),
}


def new_token(scope: str) -> str:
    return f"shp_{scope}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def granted(scopes: list[str]) -> set[str]:
    out: set[str] = set()
    for s in scopes:
        out |= IMPLIES.get(s, set())
    return out


def parse_scopes(value: str) -> list[str]:
    scopes = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(
            f"unknown scope(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SCOPES)}"
        )
    return scopes
