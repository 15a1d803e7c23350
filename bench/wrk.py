"""``wrk`` (Debian's C load generator) driven from the benchmarks: request bodies cycled from a
list, statuses counted, and the latency of *admitted* (200) answers only.

A Python load generator on the same 2 cores hides server costs (it takes the CPU the server
would use), so every throughput and latency number that compares servers comes from ``wrk``.
wrk's own latency histogram mixes every answer; under a flood most answers are fast 429s, so
the Lua script here also times each 200 itself. That pairing needs one connection per wrk
thread (each thread has its own Lua state and sends one request at a time), so the *probe*
connections that time admitted answers run as one thread each, beside a flood of plain
connections on one thread.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1e3 + tonumber(ts.tv_nsec) / 1e6
end
bodies = {{}}
{bodies}
local threads = {{}}
function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end
function init(args)
  i = offset % #bodies
  sent_at = 0
  admitted = {{}}
  statuses = {{}}
end
request = function()
  i = i % #bodies + 1
  sent_at = now_ms()
  return wrk.format(nil, nil, nil, bodies[i])
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and {timed} then
    admitted[#admitted + 1] = now_ms() - sent_at
  end
end
function done(summary, latency, requests)
  local all, counts = {{}}, {{}}
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("admitted")) do all[#all + 1] = v end
    for s, n in pairs(t:get("statuses")) do counts[s] = (counts[s] or 0) + n end
  end
  for s, n in pairs(counts) do io.write(string.format("STATUS %d %d\\n", s, n)) end
  table.sort(all)
  if #all > 0 then
    local function q(p) return all[math.max(1, math.ceil(p * #all))] end
    io.write(string.format("ADMITTED %d %.3f %.3f %.3f\\n", #all, q(0.5), q(0.9), q(0.99)))
  end
end
"""


def _lua_string(body: dict) -> str:
    """A Lua long string holding ``body`` as JSON, at a bracket level the text does not close."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_script(
    bodies: list[dict], headers: dict[str, str] | None = None, *, timed: bool = False
) -> Path:
    """A Lua script cycling through ``bodies`` (JSON objects). ``timed``: time each 200 (only
    meaningful with one connection per thread)."""
    lines = [f"bodies[{k + 1}] = {_lua_string(b)}" for k, b in enumerate(bodies)]
    head = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()
    )
    path = Path(tempfile.mkdtemp(prefix="wrk-")) / "bodies.lua"
    path.write_text(
        SCRIPT.format(headers=head, bodies="\n".join(lines), timed="true" if timed else "false")
    )
    return path


def start(
    url: str, script: Path, connections: int, seconds: float, *, threads: int = 1
) -> subprocess.Popen:
    """``wrk`` against ``url`` (the full endpoint) with a Lua ``script``; p50/p99 recorded."""
    return subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def parse(out: str) -> dict:
    """wrk's report: requests/s, p50/p90/p99 of every answer, errors; with our Lua script also
    the count per status and the admitted answers' p50/p90/p99 (ms)."""

    def ms(v: str) -> float:
        num, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v).groups()  # type: ignore[union-attr]
        return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: (.*)", out)
    socket_errors = sum(int(n) for n in re.findall(r"\d+", socket.group(1))) if socket else 0
    seconds = re.search(r"requests in ([\d.]+)(ms|s|m)", out)
    res: dict = {
        "rps": rps,
        "p50_ms": ms(pct["50"]),
        "p90_ms": ms(pct["90"]),
        "p99_ms": ms(pct["99"]),
        "errors": non2xx + socket_errors,
        "socket_errors": socket_errors,
    }
    if seconds:
        res["seconds"] = (
            float(seconds.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[seconds.group(2)]
        )
    statuses = {int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)}
    if statuses:
        res["status"] = statuses
        res["ok"] = statuses.get(200, 0)
        if "seconds" in res:
            res["ok_per_s"] = res["ok"] / res["seconds"]
    adm = re.search(r"^ADMITTED (\d+) ([\d.]+) ([\d.]+) ([\d.]+)$", out, re.M)
    if adm:
        res["admitted"] = {
            "n": int(adm.group(1)),
            "p50_ms": float(adm.group(2)),
            "p90_ms": float(adm.group(3)),
            "p99_ms": float(adm.group(4)),
        }
    return res


def run(url: str, script: Path, connections: int, seconds: float, *, threads: int = 1) -> dict:
    return parse(start(url, script, connections, seconds, threads=threads).communicate()[0])
