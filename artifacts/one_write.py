"""One write per small response: the header block and the body leave in one send.

uvicorn's httptools protocol writes a response's header block when the app sends
``http.response.start`` and its body on ``http.response.body``: two ``write`` calls, and
uvloop sends each at once, so every response costs two ``send`` syscalls and two TCP segments
(on the edge under ``wrk`` c=1, ``strace -c``: 1,520 writes for 768 requests). Each costs the
server a trip through the TCP stack and wakes the client for headers alone.

:class:`OneWritePerResponse`, mixed into the protocol (:func:`artifacts.slow_clients.
http_protocol`), gives the protocol and every request's cycle a :class:`HeldHeaders` view of
the transport: a header block is held until the next write (the body's first bytes; both go out in one write)
or the end of this event-loop step, whichever comes first, so nothing waits longer than one
step and bytes keep their order. Large bodies are not copied: the header goes out first.
"""

from __future__ import annotations

import asyncio
from typing import Any

# a body up to this size is joined to its header block (a copy); a larger one is sent after it
JOIN_MAX_BYTES = 256 << 10
# only a complete header block this small is held (a body chunk that happens to start with
# "HTTP/" is not one: it ends elsewhere, or is large)
HOLD_MAX_BYTES = 16 << 10


class HeldHeaders:
    """A transport that holds an HTTP header block until the next write or the end of the
    loop step. Everything else passes through to the real transport."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Any) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(held) + len(data) <= JOIN_MAX_BYTES:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
        elif is_header_block(data):  # uvicorn's status line and headers (or 100 Continue)
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        """In order after anything held (one write: what uvicorn passes here is small)."""
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def flush(self) -> None:
        """Send a held header block (its body did not follow within this loop step)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def is_header_block(data: Any) -> bool:
    """A whole, small HTTP/1.x response header block, as uvicorn writes one."""
    return len(data) <= HOLD_MAX_BYTES and data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n"


class OneWritePerResponse:
    """Mixed into uvicorn's httptools protocol: the protocol and every response cycle it makes
    write through :class:`HeldHeaders` (so its own writes, e.g. a 408, keep their order too)."""

    # uvicorn's protocol provides these
    loop: asyncio.AbstractEventLoop
    transport: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.transport = HeldHeaders(transport, self.loop)

    def eof_received(self) -> bool | None:
        """The client half-closed: send what is held now (the transport closes itself next)."""
        if isinstance(self.transport, HeldHeaders):
            self.transport.flush()
        return super().eof_received()  # type: ignore[misc]
