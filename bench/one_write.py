"""One write per response (``[server] one_write_per_response``, :mod:`artifacts.one_write`)
vs uvicorn's two (header block, then body), measured with `wrk` two ways:

* **HTTP alone**: two uvicorn servers with the served protocol, one write / two writes,
  answering every POST with an embeddings-sized JSON body (2 KB, no model): c=1 and c=64,
  req/s and CPU per request, in turns — the mechanism without the model's noise;
* **edge**: two edge nodes side by side (onnx-int8, result cache off): c=1 short queries in
  short paired turns (p50, the edge's CPU per request; the raw backend's batch-1 p50 measured
  in a fresh process at the start of each round, for the c=1 goal edge − raw ≤ +0.5 ms), and
  c=64 on the product mix.

    PYTHONPATH=. python -m bench.one_write [rounds]   (after ``make bench`` built the bundles)
"""

from __future__ import annotations

import json
import statistics
import sys

import bench.serving as S
from artifacts.cli.procs import Child, free_port, python_cli
from bench import wrk
from bench.common import REPORT_DIR, WORK_DIR, isolated, machine, md_table, stamp

SETTINGS = {"one write (the edge)": True, "two writes (uvicorn's)": False}
C1_S, C64_S = 3.0, 8.0
C1_TURNS = 4  # paired c=1 turns per round and node
HTTP_S = 3.0
BODY = json.dumps({"object": "list", "data": [{"embedding": "A" * 2048}]}).encode()


async def _app(scope, receive, send) -> None:
    """Every request: read the body, answer an embeddings-sized JSON body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve(port: str, one_write: str) -> None:
    import uvicorn

    from artifacts.http_protocol import http_protocol

    proto = http_protocol(10.0, one_write=one_write == "1")
    uvicorn.run(_app, host="127.0.0.1", port=int(port), log_level="warning", http=proto)


def http_alone(rounds: int, script) -> dict[str, list[dict]]:
    servers: dict[str, tuple[Child, str]] = {}
    out: dict[str, list[dict]] = {n: [] for n in SETTINGS}
    try:
        for i, (name, on) in enumerate(SETTINGS.items()):
            port = free_port()
            argv = python_cli("bench.one_write", "serve", str(port), "1" if on else "0")
            child = Child(f"http{i}", argv, WORK_DIR / "one-write" / f"http{i}.log")
            child.wait_http(f"http://127.0.0.1:{port}/", 30)
            servers[name] = (child, f"http://127.0.0.1:{port}/")
        names = list(SETTINGS)
        for r in range(rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                child, url = servers[name]
                row = {}
                for c in (1, 64):
                    cpu0 = S.cpu_s(child.pid)
                    res = wrk.run(url, script, c, HTTP_S)
                    row[f"c{c}_rps"] = res["rps"]
                    row[f"c{c}_cpu_us"] = (S.cpu_s(child.pid) - cpu0) / (res["rps"] * HTTP_S) * 1e6
                out[name].append(row)
                print(f"http round {r}: {name}: {row}", flush=True)
    finally:
        for child, _ in servers.values():
            child.stop()
    return out


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def c1_turn(edge: S.Edge, scripts: dict) -> dict:
    url = f"{edge.url}/v1/embeddings"
    cpu0 = S.cpu_s(edge.child.pid)
    c1 = wrk.run(url, scripts["queries"], 1, C1_S)
    cpu = S.cpu_s(edge.child.pid) - cpu0
    return {"p50_ms": c1["p50_ms"], "cpu_us": cpu / max(1, c1["rps"] * C1_S) * 1e6}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(*sys.argv[2:4])
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    names = list(SETTINGS)
    http = http_alone(rounds, wrk.write_script([{"input": "wireless earbuds"}]))
    scripts = S.bodies(S.EDGE_MODEL)
    stack = S.Stack(WORK_DIR / "minilm-bundles")
    c1: dict[str, list[dict]] = {n: [] for n in names}
    c64: dict[str, list[dict]] = {n: [] for n in names}
    gap: dict[str, list[float]] = {n: [] for n in names}
    raw: list[float] = []
    edges: dict[str, S.Edge] = {}
    try:
        for i, name in enumerate(names):
            edges[name] = stack.edge(
                f"write{i}",
                result_cache={"max_bytes": 0},
                server={"one_write_per_response": SETTINGS[name]},
            )
            wrk.run(f"{edges[name].url}/v1/embeddings", scripts["queries"], 4, 3)  # warm
        bundle = str(edges[names[0]].bundle)
        for r in range(rounds):
            raw.append(isolated(S.raw_latency, bundle)["p50_ms"])
            this: dict[str, list[dict]] = {n: [] for n in names}
            for t in range(C1_TURNS):
                for name in names[(r + t) % 2 :] + names[: (r + t) % 2]:
                    this[name].append(c1_turn(edges[name], scripts))
            for name in names:
                c1[name] += this[name]
                gap[name].append(statistics.median(x["p50_ms"] for x in this[name]) - raw[-1])
            for name in names[r % 2 :] + names[: r % 2]:
                res = wrk.run(f"{edges[name].url}/v1/embeddings", scripts["products"], 64, C64_S)
                c64[name].append(res)
            print(
                f"round {r}: raw p50 {raw[-1]:.2f} | "
                + " | ".join(
                    f"{n}: c=1 p50 {[x['p50_ms'] for x in this[n]]} c=64 {c64[n][-1]['rps']:.0f}/s"
                    for n in names
                ),
                flush=True,
            )
    finally:
        for edge in edges.values():
            edge.close()
        stack.close()

    def per_round(rows: dict[str, list[dict]], key: str, fn) -> str:
        a, b = rows[names[0]], rows[names[1]]
        return spread([fn(x[key], y[key]) for x, y in zip(a, b, strict=True)])

    http_rows = [
        [
            name,
            spread([x["c1_rps"] for x in http[name]], 0),
            spread([x["c1_cpu_us"] for x in http[name]], 0),
            spread([x["c64_rps"] for x in http[name]], 0),
            spread([x["c64_cpu_us"] for x in http[name]], 0),
        ]
        for name in names
    ]
    edge_rows = [
        [
            name,
            spread([x["p50_ms"] for x in c1[name]]),
            spread(gap[name]),
            spread([x["cpu_us"] for x in c1[name]], 0),
            spread([x["rps"] for x in c64[name]], 0),
            spread([x["p99_ms"] for x in c64[name]], 0),
        ]
        for name in names
    ]
    report = f"""# One write per response vs uvicorn's two ({stamp()})

Machine: {machine()}. `[server] one_write_per_response` (:mod:`artifacts.one_write`): a
response's header block and body in one write instead of uvicorn's two. Median [min–max].

**HTTP alone** (uvicorn with the served protocol, an embeddings-sized 2 KB JSON answer to every
POST, no model; `wrk` {HTTP_S:.0f} s per run, the two servers in turns, {rounds} rounds):

{md_table(["server", "c=1 req/s", "CPU per c=1 request, µs", "c=64 req/s", "CPU per c=64 request, µs"], http_rows)}

Per round, one / two writes: c=1 req/s {per_round(http, "c1_rps", lambda a, b: a / b)}x,
c=64 req/s {per_round(http, "c64_rps", lambda a, b: a / b)}x; CPU per request two − one: c=1
{per_round(http, "c1_cpu_us", lambda a, b: b - a)} µs, c=64 {per_round(http, "c64_cpu_us", lambda a, b: b - a)} µs.

**Edge** (two nodes side by side, onnx-int8 all-MiniLM-L6-v2, result cache off; per round
{C1_TURNS} paired c=1 turns of {C1_S:.0f} s on held-out short queries, order alternating, then c=64 on
the product mix for {C64_S:.0f} s each; raw backend batch-1 p50 in a fresh process at the start of
each round: {spread(raw)} ms; {rounds} rounds):

{md_table(["node", "c=1 p50 ms (every turn)", "c=1 p50 − raw ms (per round)", "edge CPU per c=1 request, µs", "c=64 products req/s", "c=64 p99 ms"], edge_rows)}

Per paired turn, two − one write: c=1 p50 {per_round(c1, "p50_ms", lambda a, b: b - a)} ms, CPU per
c=1 request {per_round(c1, "cpu_us", lambda a, b: b - a)} µs; c=64 req/s one / two
{per_round(c64, "rps", lambda a, b: a / b)}x.
"""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "one_write.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
