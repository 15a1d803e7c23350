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
