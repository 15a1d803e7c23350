"""Slow clients (slowloris) on central's and the edge's HTTP servers.

uvicorn times out an idle keep-alive connection, but not a request being read: a client that
connects and sends nothing, trickles its headers a byte at a time, or stalls its body holds a
connection (and on the edge, a slot of ``server.max_connections``, past which everyone gets 503)
for as long as it likes. A few hundred such sockets from one attacker take a node off the air.

:class:`ReadClocks`, mixed into uvicorn's httptools protocol (:func:`artifacts.http_protocol.
http_protocol`), keeps two clocks:

* **headers**: a request's headers must be complete within ``seconds`` of its first byte (of the
  connection opening, for the first request); past that the client gets ``408`` and the
  connection is closed;
* **body**: while a body is being read, every ``seconds`` window must bring at least
  ``min_body_rate * seconds`` bytes (a large upload at any honest speed passes: a 10 GB source
  tarball at 100 kB/s is slow, not an attack); past that the connection is closed and the
  application sees the client disconnect. A window in which the server itself paused reading
  (its buffer full while the app is busy) is not held against the client.

A body the application answered without reading (a 401, a 413 on its announced length) gets one
window more, then the connection closes. Any byte between requests (even the blank lines the parser
skips) starts the next request's headers clock; otherwise uvicorn's keep-alive timeout applies.

On the write side, a client that stops reading its response (a zero receive window, or pipelined
requests whose answers it never takes) has one window to resume before the connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0
MIN_BODY_BYTES_PER_S = 1024

_TIMEOUT_BODY = b"request headers not received in time\n"
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n"
) + _TIMEOUT_BODY


class ReadClocks:
    """The clocks, mixed into uvicorn's httptools protocol by
    :func:`artifacts.http_protocol.http_protocol` (which sets ``read_timeout_s`` and
    ``window_bytes``)."""

    read_timeout_s: float
    window_bytes: int
    _reading: str | None = None  # "headers", "body", or None between requests
    _got = 0  # body bytes received in the current window
    _due: float | None = None  # when the current window ends (loop time)
    # one timer per connection, moved lazily: a request restarts the clock twice, and arming
    # and cancelling a timer each time cost more than the rest of this class per request
    _clock: asyncio.TimerHandle | None = None
    _write_clock: asyncio.TimerHandle | None = None
    # uvicorn's protocol provides these
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any
    cycle: Any
    client: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._read("headers")  # a silent connection has as long as a request's headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._read(None)
        if self._clock is not None:  # nothing left to time: let the protocol go now
            self._clock.cancel()
            self._clock = None
        self._unwatch_writes()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._reading is None and data:
            # any byte between requests starts the next request's clock (the parser skips
            # blank lines without a message begin: CRLF every few seconds must not hold a slot)
            self._read("headers")
        super().data_received(data)  # type: ignore[misc]

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        if self._reading != "headers":  # the clock runs from the first byte, not restarted
            self._read("headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()  # type: ignore[misc]
        self._read("body")

    def on_body(self, body: bytes) -> None:
        self._got += len(body)
        super().on_body(body)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._read(None)

    def pause_writing(self) -> None:
        """The client stopped reading what it asked for (its buffer full): it has one window to
        take it, else the connection is dropped (a never-reading client held it forever)."""
        super().pause_writing()  # type: ignore[misc]
        if self._write_clock is None:
            self._write_clock = self.loop.call_later(self.read_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._unwatch_writes()
        super().resume_writing()  # type: ignore[misc]

    def _unwatch_writes(self) -> None:
        if self._write_clock is not None:
            self._write_clock.cancel()
            self._write_clock = None

    def _write_stalled(self) -> None:
        self._write_clock = None
        log.info("dropping a connection from %s: it stopped reading its response", self.client)
        self._read(None)
        self.transport.abort()  # close() would wait for the buffer the client never reads

    def _read(self, what: str | None) -> None:
        """Start the ``what`` window now (None: stop timing). An armed timer is left to fire:
        :meth:`_tick` re-arms it for the window's end when that moved."""
        self._reading, self._got = what, 0
        if what is None:
            self._due = None
            return
        self._due = self.loop.time() + self.read_timeout_s
        if self._clock is None:
            self._clock = self.loop.call_at(self._due, self._tick)

    def _excused(self) -> bool:
        """A window the client is not to blame for: the server paused reading (its buffer full
        behind a busy app, or a pipelined request waiting for the response before it), or the
        client waits, as it should, for the app's 100 Continue."""
        cycle = self.cycle
        waiting = cycle is not None and getattr(cycle, "waiting_for_100_continue", False)
        return bool(self.flow.read_paused or (self._reading == "body" and waiting))

    def _tick(self) -> None:
        self._clock = None
        if self._reading is None or self._due is None or self.transport.is_closing():
            return
        if self.loop.time() < self._due:  # the window restarted since this timer was armed
            self._clock = self.loop.call_at(self._due, self._tick)
            return
        answered = self.cycle is not None and self.cycle.response_complete
        if self._excused() or (
            self._reading == "body" and self._got >= self.window_bytes and not answered
        ):  # (a body nobody will read any more, after the answer: one window at most)
            self._read(self._reading)
            return
        log.info(
            "closing a connection from %s: request %s not read in time", self.client, self._reading
        )
        idle = self.cycle is None or self.cycle.response_complete
        if self._reading == "headers" and idle:  # never inside another response's bytes
            self.transport.write(_TIMEOUT)
        self._read(None)
        if self.transport.get_write_buffer_size() > len(_TIMEOUT):
            self.transport.abort()  # a client not reading would hold close() forever
        else:
            self.transport.close()
