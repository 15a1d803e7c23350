"""Child processes as process groups (start, wait for HTTP, stop without strays) and RSS.

One helper for every place that runs Shipyard's own daemons as children: the demo, central's
in-process build workers, the benchmarks and the tests. Each child gets its own session, so
stopping it also stops whatever it started (a build worker's build process, uvicorn workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from artifacts.errors import ShipyardError


class ProcessError(ShipyardError):
    """A child process exited early or did not become ready."""


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    with socket.socket() as s:
        if preferred:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_cli(module: str, *args: str) -> list[str]:
    """argv running ``module.main()`` with this interpreter (console scripts need not exist)."""
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *args]


def tail(log: Path, n: int = 25) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Child:
    """One child process in its own session, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.log = name, Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env if env is not None else dict(os.environ),
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait_http(self, url: str, timeout: float) -> None:
        """Until ``url`` answers 200; raise (with the log's tail) if the child exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(
                    f"{self.name} exited with {self.proc.returncode}; log:\n{tail(self.log)}"
                )
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ProcessError(
            f"{self.name}: {url} not ready after {timeout:.0f} s; log:\n{tail(self.log)}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        stop_all([self], grace_s)


def stop_all(children: list[Child], grace_s: float = 10.0) -> None:
    """SIGTERM every group (newest first), wait up to ``grace_s``, then SIGKILL what is left."""
    for c in reversed(children):
        c.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for c in reversed(children):
        while c.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if c.alive():
            c.signal(signal.SIGKILL)
            c.proc.wait()
        c._fh.close()


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of ``pid`` (default: this process) in MiB; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class PeakRss:
    """Samples a process's RSS every ``interval_s`` in a thread; ``peak`` is the maximum seen."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_mb(self.pid))

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak

    def __enter__(self) -> PeakRss:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
