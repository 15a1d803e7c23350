"""The uvicorn ``http`` protocol central and the edge serve with: httptools with the read clocks
of :mod:`artifacts.slow_clients` and the single response write of :mod:`artifacts.one_write`."""

from __future__ import annotations

import logging
from typing import Any

from artifacts.one_write import OneWritePerResponse
from artifacts.slow_clients import MIN_BODY_BYTES_PER_S, ReadClocks

log = logging.getLogger(__name__)


def http_protocol(
    read_timeout_s: float, *, one_write: bool = True, min_body_rate: int = MIN_BODY_BYTES_PER_S
) -> Any:
    """uvicorn's httptools protocol class with the read clocks (``read_timeout_s`` 0: none)
    and one write per response (``one_write``); ``"auto"`` (uvicorn's own) when neither is
    wanted or httptools is not installed."""
    mixins: list[type] = []
    settings: dict[str, Any] = {}
    if read_timeout_s > 0:
        mixins.append(ReadClocks)
        settings = {
            "read_timeout_s": read_timeout_s,
            "window_bytes": int(min_body_rate * read_timeout_s),
        }
    if one_write:
        mixins.append(OneWritePerResponse)
    if not mixins:
        return "auto"
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a pinned dependency
        log.warning("httptools is not installed: no read timeout for slow clients")
        return "auto"
    return type("ShipyardHttpProtocol", (*mixins, HttpToolsProtocol), settings)
