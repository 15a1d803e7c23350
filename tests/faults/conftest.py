"""Fault-injection fixtures: central (in-process), a fault proxy in front of it, and edge
nodes as real processes pointed at the proxy."""

from __future__ import annotations

import pytest

from artifacts.client import RegistryClient
from artifacts.signing import load_signing_key
from artifacts.targets import CPU_TARGETS
from tests.faults.edge_process import EdgeProcess
from tests.faults.proxy import FaultProxy
from tests.integration.edge_runtime.conftest import push_version
from tests.servers import CentralServer

MODEL = "tiny-embedding"


class Stack:
    """Central + proxy; ``publish()`` promotes a new version of the tiny embedding model."""

    def __init__(self, tmp, publisher_keys, tiny_builds) -> None:
        self.tmp, self.publisher_keys, self.tiny_builds = tmp, publisher_keys, tiny_builds
        self.key = load_signing_key(publisher_keys[0])
        self.central = self._central()
        self.proxy = FaultProxy(self.central.url).start()
        self.pull_token = self.central.token("pull", name="edge")
        self.edges: list[EdgeProcess] = []

    def _central(self, port: int | None = None) -> CentralServer:
        return CentralServer(
            self.tmp / "central",
            None,
            trusted=[self.publisher_keys[1]],
            local_workers=0,
            port=port,
        ).start()

    def restart_central(self, down_s: float = 1.0) -> None:
        import time

        port = self.central.port
        self.central.stop()
        time.sleep(down_s)
        self.central = self._central(port)

    def publish(self, targets=CPU_TARGETS) -> int:
        out, _ = self.tiny_builds["embedding"]
        with RegistryClient(self.central.url, self.central.admin_token) as c:
            v = push_version(c, MODEL, [out / t for t in targets], self.key)
            c.promote(MODEL, "stable", v)
        return v

    def edge(self, name: str = "edge", **extra) -> EdgeProcess:
        e = EdgeProcess.configured(
            self.tmp / name,
            registry=self.proxy.url,
            token=self.pull_token,
            trusted=self.publisher_keys[1],
            cache=self.tmp / name / "cache",
            models=[MODEL],
            **extra,
        )
        self.edges.append(e)
        return e

    def close(self) -> None:
        for e in self.edges:
            e.kill()
        self.proxy.stop()
        self.central.stop()


@pytest.fixture
def stack(tmp_path, publisher_keys, tiny_builds):
    s = Stack(tmp_path, publisher_keys, tiny_builds)
    yield s
    s.close()
