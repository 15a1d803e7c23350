"""The one name rule for models, channels, targets and token names."""

from __future__ import annotations

import re

from artifacts.errors import InvalidNameError

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None and ".." not in name


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier, else raise :class:`InvalidNameError`."""
    if not is_valid_name(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-64 chars of a-z 0-9 . _ - starting with a letter "
            "or digit (no '..')"
        )
    return name  # type: ignore[return-value]
