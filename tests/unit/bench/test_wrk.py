"""The wrk driver's parsing and Lua script (wrk itself runs only in ``make bench``)."""

from __future__ import annotations

from bench import wrk

OUT = """Running 20s test @ http://127.0.0.1:8080/v1/embeddings
  1 threads and 900 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.50ms   80.10ms   1.20s    70.00%
  Latency Distribution
     50%   98.00ms
     75%  150.00ms
     90%  250.00ms
     99%    1.10s
  20480 requests in 20.00s, 9.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 18000
Requests/sec:   1024.00
Transfer/sec:    460.00KB
STATUS 200 2480
STATUS 429 18000
ADMITTED 2480 310.500 700.250 990.125
"""


def test_parse_reads_rates_percentiles_statuses_and_admitted_latency():
    r = wrk.parse(OUT)
    assert r["rps"] == 1024.0 and r["seconds"] == 20.0
    assert (r["p50_ms"], r["p90_ms"], r["p99_ms"]) == (98.0, 250.0, 1100.0)
    assert r["errors"] == 18000 + 5 and r["socket_errors"] == 5
    assert r["status"] == {200: 2480, 429: 18000} and r["ok"] == 2480
    assert r["ok_per_s"] == 124.0
    assert r["admitted"] == {"n": 2480, "p50_ms": 310.5, "p90_ms": 700.25, "p99_ms": 990.125}


def test_parse_without_our_lua_summary():
    plain = "\n".join(line for line in OUT.splitlines() if not line.startswith(("STATUS", "ADM")))
    r = wrk.parse(plain)
    assert "status" not in r and "admitted" not in r and r["rps"] == 1024.0


def test_the_script_holds_every_body_and_times_only_when_asked():
    bodies = [{"input": "a ]] b ]=] c", "model": "m"}, {"input": "ü", "model": "m"}]
    plain, timed = wrk.write_script(bodies), wrk.write_script(bodies, timed=True)
    text = plain.read_text()
    assert text.count("bodies[") == 3  # the table and its two entries
    assert "status == 200 and false" in text
    assert "status == 200 and true" in timed.read_text()
    assert '"ü"' in text  # UTF-8 kept as is
    assert '[==[{"input":"a ]] b ]=] c","model":"m"}]==]' in text  # a level never closed
