"""An edge node as a real process (``bench.faulty_edge``: ``edge-runtime serve`` with faults a
test switches on by creating files); :class:`EdgeProcess` starts, signals and restarts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from artifacts.cli.procs import free_port
from bench.faulty_edge import FAULTS_ENV


def write_config(
    path: Path,
    *,
    registry: str,
    token: str,
    trusted: Path,
    cache: Path,
    port: int,
    models: list[str],
    poll_s: float = 0.5,
    extra: str = "",
) -> Path:
    q = json.dumps
    model_tables = "".join(f'\n[[models]]\nname = {q(m)}\nchannel = "stable"\n' for m in models)
    path.write_text(
        f"[registry]\nurl = {q(registry)}\ntoken = {q(token)}\ntrusted_keys = [{q(str(trusted))}]\n"
        f"poll_interval_s = {poll_s}\ntimeout_s = 3.0\n\n"
        f"[cache]\ndir = {q(str(cache))}\n\n"
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n{extra}\n' + model_tables
    )
    return path


class EdgeProcess:
    """``edge-runtime serve`` in a child process; its output goes to ``log``."""

    def __init__(
        self, config: Path, port: int, faults: Path, log: Path, env: dict | None = None
    ) -> None:
        self.config, self.port, self.faults, self.log = config, port, faults, log
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @classmethod
    def configured(cls, tmp: Path, env: dict | None = None, **config) -> EdgeProcess:
        port = free_port()
        faults = tmp / "faults"
        faults.mkdir(parents=True, exist_ok=True)
        cfg = write_config(tmp / "edge.toml", port=port, **config)
        return cls(cfg, port, faults, tmp / "edge.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EdgeProcess:
        env = dict(os.environ, **{FAULTS_ENV: str(self.faults)}, **self.env)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.faulty_edge", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parents[2],
            )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict | None:
        try:
            r = httpx.get(f"{self.url}/v1/status", timeout=5)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def model(self, name: str) -> dict | None:
        st = self.status()
        return next((m for m in st["models"] if m["model"] == name), None) if st else None

    def wait(self, predicate, timeout: float = 60.0, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"edge exited ({self.proc.returncode}):\n{self.tail()}")
            st = self.status()
            if st is not None and predicate(st):
                return st
            time.sleep(0.1)
        raise AssertionError(f"edge never reached {what or predicate}: {st}\n{self.tail()}")

    def wait_open(self, path: str, timeout: float = 60.0) -> None:
        """Until ``path`` answers 200 (for endpoints that need no key)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{path} never answered 200\n{self.tail()}"
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            time.sleep(0.1)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""
