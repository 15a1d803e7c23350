"""The in-process CPU build workers central starts by default (``local_workers``, two, so that
a different worker can verify what one built), so a single machine does everything.

Each is an enrolled worker like any other: re-enrolled at every start with a fresh credential
(the previous one revoked) for the CPU targets only — unless an admin disabled it, run as ``builder worker`` in its own
process group with a scrubbed environment and a home (its work directory) that holds its own
key and nothing of central's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from artifacts.cli.procs import Child, python_cli, stop_all
from artifacts.targets import CPU_TARGETS, INDEX_TARGET
from central.settings import CentralConfig
from central.workers.service import WorkerService

log = logging.getLogger("shipyard.central.builds")
# What a build needs from the environment; nothing else (no central secrets, no SHIPYARD_*).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


def scrubbed_env(home: str, token: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(
        {
            "HOME": home,
            "SHIPYARD_WORKER_TOKEN": token,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


class LocalWorkers:
    def __init__(self, config: CentralConfig, workers: WorkerService) -> None:
        self.config = config
        self.workers = workers
        self.children: list[Child] = []

    async def start(self) -> None:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        url = f"http://{host}:{self.config.port}"
        known = {w.name: w for w in await self.workers.list()}
        for i in range(self.config.local_workers):
            name = f"local-{i + 1}"
            info = known.get(name)
            if info is not None and info.disabled:  # an admin's decision stands across restarts
                log.warning(
                    "not starting build worker %s: disabled (%s)", name, info.disabled_reason
                )
                continue
            if info is None or info.key_id is None:  # new, reset or re-enrolled: a fresh key
                shutil.rmtree(self._work(name) / "keys", ignore_errors=True)
            token = await self.workers.enroll(name, [*CPU_TARGETS, INDEX_TARGET], None, "central")
            self.children.append(self._spawn(url, token, name))

    def _spawn(self, url: str, token: str, name: str) -> Child:
        work = self._work(name)
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)
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
        child = Child(name, argv, work / "worker.log", scrubbed_env(str(work), token), cwd=work)
        return child

    def _work(self, name: str) -> Path:
        return self.config.home_path / "worker" / name

    async def stop(self) -> None:
        await asyncio.to_thread(stop_all, self.children, 10.0)
