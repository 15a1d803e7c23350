"""systemd's notify protocol (``Type=notify``), without a dependency: one datagram per message
to ``$NOTIFY_SOCKET``. A no-op when the variable is unset (not run by systemd), so the daemons
call it unconditionally. The watchdog pings come from the event loop, so a hung loop is
restarted by systemd (``WatchdogSec=``).

Spec: sd_notify(3) — ``READY=1``, ``STATUS=…``, ``STOPPING=1``, ``WATCHDOG=1``; the socket is a
path or, with a leading ``@``, an abstract-namespace name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from artifacts.http_protocol import http_protocol
from artifacts.slow_clients import READ_TIMEOUT_S

log = logging.getLogger("shipyard.sdnotify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; False when not under systemd or the socket is gone."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(fields).encode())
            return True
        except OSError as exc:  # never let the notify channel take a daemon down
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "draining in-flight requests") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self) -> None:
        """Ping at half the interval systemd asked for, from the running event loop."""
        if self.watchdog_s is None or not self.enabled or self._task is not None:
            return

        async def ping() -> None:
            while True:
                self.send("WATCHDOG=1")
                await asyncio.sleep(self.watchdog_s / 2)  # type: ignore[operator]

        self._task = asyncio.get_running_loop().create_task(ping(), name="sd-watchdog")

    async def stop_watchdog(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def announce_ready(
    notifier: Notifier,
    is_ready: Callable[[], bool],
    describe: Callable[[], str],
    address: tuple[str, int],
    poll_s: float = 0.2,
) -> None:
    """``READY=1`` once ``is_ready()`` and ``address`` accepts connections (the lifespan runs
    before the server listens); ``STATUS=`` whenever the description changes meanwhile."""
    if not notifier.enabled:
        return
    host = "127.0.0.1" if address[0] in ("0.0.0.0", "", "::") else address[0]
    last = ""
    while True:
        text = describe()
        if is_ready() and await _accepts(host, address[1]):
            notifier.ready(text)
            return
        if text != last:
            notifier.status(text)
            last = text
        await asyncio.sleep(poll_s)


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def serve(
    app: Any,
    notifier: Notifier,
    *,
    read_timeout_s: float = READ_TIMEOUT_S,
    one_write: bool = True,
    **uvicorn_kw: Any,
) -> None:
    """``uvicorn.run`` that says ``STOPPING=1`` the moment SIGTERM/SIGINT arrives (uvicorn then
    stops accepting and drains in-flight requests for ``timeout_graceful_shutdown`` s), and
    closes connections whose request is not read in time (:mod:`artifacts.slow_clients`;
    ``read_timeout_s`` 0: never), and sends each small response in one write
    (:mod:`artifacts.one_write`; ``one_write`` False: uvicorn's two)."""
    import uvicorn

    uvicorn_kw.setdefault("http", http_protocol(read_timeout_s, one_write=one_write))
    uvicorn_kw.setdefault("ws", "none")  # no WebSocket routes: an upgrade request is plain HTTP

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                notifier.stopping()
            super().handle_exit(sig, frame)

    # log_config=None: uvicorn's loggers go through the process's handlers (--log-format)
    _Server(uvicorn.Config(app, log_config=None, **uvicorn_kw)).run()
