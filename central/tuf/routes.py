"""TUF metadata and channel pointers, for edge nodes (``pull``)."""

from __future__ import annotations

from litestar import Response, get

from central.auth.guard import pull
from central.tuf.shared import SharedTuf

JSON = "application/json"


@get("/v1/tuf/{name:str}", **pull(tuf_role=True))
async def metadata(tuf: SharedTuf, name: str) -> Response[bytes]:
    """``root.json``, ``N.root.json``, ``timestamp.json``, ``snapshot.json``, ``targets.json``,
    ``models.json``, ``model-<name>.json``: signed, served as written."""
    return Response(
        await tuf.metadata(name), media_type=JSON, headers={"Cache-Control": "no-store"}
    )


@get("/v1/tuf/targets/{model:str}/{channel:str}", **pull())
async def channel_pointer(tuf: SharedTuf, model: str, channel: str) -> Response[bytes]:
    """A channel pointer (its length and hashes are in the ``model-<name>`` role)."""
    return Response(
        await tuf.target(model, channel.removesuffix(".json")),
        media_type=JSON,
        headers={"Cache-Control": "no-store"},
    )


handlers = [metadata, channel_pointer]
