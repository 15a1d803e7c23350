"""Real servers on loopback for tests: central and the edge (uvicorn in a thread)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn

from artifacts.cli.procs import free_port
from artifacts.client import RegistryClient
from bench.nats_server import NatsServer  # noqa: F401  (tests start their own broker)


@contextmanager
def handler_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stdlib HTTP server on loopback answering with ``handler``, in a thread: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class ThreadedServer:
    """Run an ASGI app with uvicorn in a background thread (its own event loop)."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class CentralServer(ThreadedServer):
    def __init__(
        self,
        home: Path,
        database_url: str | None = None,
        trusted: list[Path] = (),
        port: int | None = None,
        tracing=None,
        **config,
    ) -> None:
        from central.app import create_app
        from central.settings import CentralConfig

        home = Path(home)
        (home / "trusted_keys").mkdir(parents=True, exist_ok=True)
        for pub in trusted:
            (home / "trusted_keys" / Path(pub).name).write_bytes(Path(pub).read_bytes())
        port = port or free_port()
        self.cfg = CentralConfig(home=str(home), database_url=database_url, port=port, **config)
        super().__init__(create_app(self.cfg, tracing=tracing), port=port)

    @property
    def admin_token(self) -> str:
        return (self.cfg.home_path / "admin.token").read_text().strip()

    def token(self, *scopes: str, name: str = "t") -> str:
        with RegistryClient(self.url, self.admin_token) as c:
            return c.create_token(name, list(scopes))

    def enroll(self, name: str, targets: list[str]) -> str:
        """An enrolled worker's credential (the worker registers its own key with it)."""
        with RegistryClient(self.url, self.admin_token) as c:
            return c.enroll_worker(name, targets)

    def worker_client(self, name: str, targets: list[str], caps=None):
        """A hand-driven enrolled worker: (client bound to ``name``, its signing key)."""
        from artifacts.signing import SigningKey
        from artifacts.wire import WorkerHello
        from bench.fixtures import cpu_node

        c = RegistryClient(self.url, self.enroll(name, targets))
        key = SigningKey.generate()
        c.register_worker_key(name, key.public_pem().decode())
        c.worker_hello(WorkerHello(name=name, capabilities=caps or cpu_node(), targets=targets))
        return c, key


class EdgeServer(ThreadedServer):
    def __init__(self, config, tracing=None) -> None:
        from edge_runtime.http.app import create_app
        from edge_runtime.node import EdgeNode

        port = free_port()
        config.server.port = port
        self.node = EdgeNode(config, tracing)
        super().__init__(create_app(self.node), port=port)

    def status(self) -> dict:
        return httpx.get(f"{self.url}/v1/status", timeout=10).json()

    def wait(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"edge status never matched: {st}")
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 60.0) -> dict:
        return self.wait(lambda st: st["ready"], timeout)

    def wait_settled(self, timeout: float = 60.0) -> dict:
        """Until every model left 'starting' (ready or not-ready)."""
        return self.wait(lambda st: all(m["state"] != "starting" for m in st["models"]), timeout)


class CentralProcess:
    """``central serve`` as its own process (a replica that can be SIGKILLed)."""

    def __init__(self, home: Path, *args: str, env: dict | None = None) -> None:
        import os

        self.home = Path(home)
        self.port = free_port()
        self.args = ["--home", str(home), "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log = self.home.with_suffix(".log")
        self.child = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self):
        return self.child.proc if self.child is not None else None

    def start(self, timeout: float = 60.0, *, ready: bool = True) -> CentralProcess:
        from artifacts.cli.procs import Child, python_cli

        self.home.mkdir(parents=True, exist_ok=True)
        self.child = Child(
            "central", python_cli("central.cli", "serve", *self.args), self.log, env=self.env
        )
        if ready:
            self.child.wait_http(f"{self.url}/readyz", timeout)
        return self

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup (a crashed replica)."""
        if self.child is not None and self.child.alive():
            self.child.signal(signal.SIGKILL)
            self.child.proc.wait(10)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(20)

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()
