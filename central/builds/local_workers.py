"""The in-process CPU build workers central starts by default (``local_workers``), so a single
machine does everything. Each runs ``builder worker`` as a child process group."""

from __future__ import annotations

import asyncio
import logging
import os

from artifacts import atomic
from artifacts.cli.procs import Child, python_cli, stop_all
from central.auth.service import TokenService
from central.settings import CentralConfig

log = logging.getLogger("shipyard.central.builds")
LOCAL_WORKER_TOKEN = "local-worker.token"


class LocalWorkers:
    def __init__(self, config: CentralConfig, tokens: TokenService) -> None:
        self.config = config
        self.tokens = tokens
        self.children: list[Child] = []

    async def start(self) -> None:
        if self.config.local_workers <= 0:
            return
        token = await self._token()
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        url = f"http://{host}:{self.config.port}"
        for i in range(self.config.local_workers):
            self.children.append(self._spawn(url, token, f"local-{i + 1}"))

    def _spawn(self, url: str, token: str, name: str) -> Child:
        work = self.config.home_path / "worker" / name
        work.mkdir(parents=True, exist_ok=True)
        argv = python_cli(
            "builder.cli",
            "worker",
            "--central",
            url,
            "--name",
            name,
            "--work-dir",
            str(work),
            "--lease-wait",
            "5",  # also bounds how long a stopping worker waits for its last poll
            "--build-timeout",
            str(int(self.config.build_timeout_s)),
        )
        log.info("starting in-process build worker %s (log: %s)", name, work / "worker.log")
        env = {**os.environ, "SHIPYARD_WORKER_TOKEN": token}
        return Child(name, argv, work / "worker.log", env)

    async def _token(self) -> str:
        path = self.config.home_path / LOCAL_WORKER_TOKEN
        if path.exists():
            return path.read_text().strip()
        token = await self.tokens.create("local-worker", ["build"], actor="central")
        atomic.write_bytes(path, (token + "\n").encode(), mode=0o600)
        return token

    async def stop(self) -> None:
        await asyncio.to_thread(stop_all, self.children, 10.0)
