"""Would a native HTTP front cut the c=1 floor? The edge's server stack (uvicorn + uvloop +
httptools, as ``bench.http_floor floor`` serves it) against granian (a Rust HTTP server for
Python) serving the same bare answer, through its RSGI and its ASGI interfaces, single-threaded
runtime, uvloop.

``PYTHONPATH=. python -m bench.http_fronts [turns]`` (granian installed: ``pip install granian``;
not part of ``make bench``). Each turn runs ``wrk`` c=1 for 6 s against each server, the order
rotated per turn, with ``wrk`` pinned to CPU 0 so the servers share one scheduling; reports p50
and the mean (1 / rate) per server, median [min–max] over turns. A decision aid for the c=1 goal
of issue #23: measured 2026-12-03, granian's answer took 0.1–0.2 ms longer (its request crosses
from a Rust thread to the Python one and back), so the edge stays on uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import bench.serving as S
from artifacts.cli.procs import Child, free_port, python_cli
from bench import wrk
from bench.common import WORK_DIR

RSGI_APP = """
from pathlib import Path
ANSWER = Path({answer!r}).read_bytes()
HEAD = [("content-type", "application/json")]

async def app(scope, proto):
    if scope.proto != "http":
        return
    if scope.method == "POST":
        await proto()
    proto.response_bytes(200, HEAD, ANSWER)
"""

ASGI_APP = """
from pathlib import Path
from bench.http_floor import floor_app
app = floor_app(Path({answer!r}).read_bytes(), [(b"content-type", b"application/json")])
"""


def granian(interface: str, port: int, module: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "granian", "--interface", interface, "--loop", "uvloop"),
        *("--runtime-mode", "st", "--no-ws", "--http", "1", "--port", str(port)),
        *("--log-level", "warning", f"{module}:app"),
    ]


def main() -> None:
    try:
        import granian as _  # noqa: F401
    except ImportError:
        raise SystemExit("granian is not installed: pip install granian") from None
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    home = Path(tempfile.mkdtemp(prefix="fronts-", dir=WORK_DIR))
    answer = home / "answer.json"  # an embeddings answer's size (384 floats, base64)
    answer.write_text('{"data":[{"embedding":"' + "A" * 2048 + '","index":0}],"model":"m"}')
    (home / "rsgi_floor.py").write_text(RSGI_APP.format(answer=str(answer)))
    (home / "asgi_floor.py").write_text(ASGI_APP.format(answer=str(answer)))
    ports = {k: free_port() for k in ("uvicorn", "granian-rsgi", "granian-asgi")}
    argv = {
        "uvicorn": python_cli("bench.http_floor", "floor", str(ports["uvicorn"]), str(answer)),
        "granian-rsgi": granian("rsgi", ports["granian-rsgi"], "rsgi_floor"),
        "granian-asgi": granian("asginl", ports["granian-asgi"], "asgi_floor"),
    }
    env = {"PYTHONPATH": f"{home}:{Path(__file__).resolve().parent.parent}"}
    children = {
        k: Child(k, v, home / f"{k}.log", env={**os.environ, **env}) for k, v in argv.items()
    }
    try:
        urls = {k: f"http://127.0.0.1:{p}/v1/embeddings" for k, p in ports.items()}
        for k, child in children.items():
            child.wait_http(f"http://127.0.0.1:{ports[k]}/", 60)
        script = S.bodies(S.EDGE_MODEL)["queries"]

        def c1(url: str) -> dict:
            cmd = ["taskset", "-c", "0", "wrk", "-t1", "-c1", "-d6s", "--latency"]
            out = subprocess.run([*cmd, "-s", str(script), url], capture_output=True, text=True)
            return wrk.parse(out.stdout)

        for u in urls.values():
            httpx.post(u, json={"input": "warm"})
            c1(u)
        p50: dict[str, list[float]] = {k: [] for k in urls}
        mean: dict[str, list[float]] = {k: [] for k in urls}
        names = list(urls)
        for t in range(turns):
            for k in names[t % len(names) :] + names[: t % len(names)]:
                got = c1(urls[k])
                p50[k].append(got["p50_ms"])
                mean[k].append(1e3 / got["rps"])
                time.sleep(0.3)
            print(f"turn {t}: " + " | ".join(f"{k} p50 {p50[k][-1]:.3f}" for k in names))
        for k in names:
            print(f"{k:13s} c=1 p50 {S.fmt(p50[k], 3, ' ms')}; mean {S.fmt(mean[k], 3, ' ms')}")
    finally:
        for child in children.values():
            child.stop(10)


if __name__ == "__main__":
    main()
