"""Running as a systemd service: the notify protocol seen from systemd's side (a real unix
datagram socket standing in for it), with real edge and central processes. READY=1 only once
the node serves (its /readyz answers 200), watchdog pings while it runs, SIGHUP reloads without
killing it, SIGTERM says STOPPING=1 and drains within the bound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from artifacts.cli.procs import free_port


class FakeSystemd:
    """A bound AF_UNIX datagram socket; every message the daemon sends, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def wait_for(self, line: str, timeout: float = 60.0, on_arrival=None) -> float:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for at, msg in self.messages[seen:]:
                seen += 1
                if line in msg.split("\n"):
                    if on_arrival is not None:
                        on_arrival()
                    return at
            time.sleep(0.02)
        raise AssertionError(f"never got {line!r}; got {[m for _, m in self.messages]}")

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for _, m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = FakeSystemd(tmp_path / "notify.sock")
    yield s
    s.close()


def test_edge_ready_watchdog_reload_and_drain(stack, systemd):
    stack.publish()
    edge = stack.edge(env=systemd.env(watchdog_usec=1_000_000))
    edge.start()
    ready_status: list[int] = []
    systemd.wait_for(
        "READY=1",
        on_arrival=lambda: ready_status.append(
            httpx.get(f"{edge.url}/readyz", timeout=5).status_code
        ),
    )
    assert ready_status == [200], "READY=1 before the node served"
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for _, m in systemd.messages)
    before = systemd.count("WATCHDOG=1")
    time.sleep(1.6)
    assert systemd.count("WATCHDOG=1") >= before + 2  # every half interval, from the loop
    edge.signal(signal.SIGHUP)  # ExecReload: reloads, never kills
    time.sleep(1.0)
    assert edge.proc.poll() is None and httpx.get(f"{edge.url}/readyz").status_code == 200
    edge.signal(signal.SIGTERM)
    systemd.wait_for("STOPPING=1", timeout=15)
    assert edge.proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises it after draining


def test_central_ready_and_stopping(tmp_path, systemd):
    port = free_port()
    env = {**os.environ, **systemd.env()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from central.cli import main; sys.exit(main())",
            "serve",
            "--home",
            str(tmp_path / "central"),
            "--port",
            str(port),
            "--local-workers",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status: list[int] = []
        systemd.wait_for(
            "READY=1",
            on_arrival=lambda: status.append(
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
            ),
        )
        assert status == [200]
        proc.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1", timeout=15)
        assert proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
