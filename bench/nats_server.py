"""A ``nats-server`` with JetStream on a free port and its own file store, for tests and
``bench/`` (restartable in place: same port, same store)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from artifacts.cli.procs import free_port


class NatsServer:
    """A ``nats-server`` with JetStream on its own port and store (restartable in place)."""

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> NatsServer:
        import shutil
        import socket

        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.store.mkdir(parents=True, exist_ok=True)
        log = open(self.store.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start (see {log.name})") from None
                time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
