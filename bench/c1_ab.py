"""c=1 (and c=64) of two source trees side by side: does a change to the request path win?

``PYTHONPATH=. python -m bench.c1_ab BASE [rounds]`` (after ``make bench`` built the bundles):
checks out ``BASE`` (a git ref) into ``bench/.work/ab-base``, starts one central and two edge
nodes on the same bundle and config, result cache off — *base* runs from that checkout, *head*
from this tree — and in each round measures the raw backend's batch-1 p50 in a fresh process,
then both nodes at c=1 in alternating turns (the order flipped every turn), then c=64 on the
product mix, one node after the other. Reports per node the median [min–max] over rounds of
each round's median turn, and of ``p50 − raw``; at c=1 also the mean (1 / rate: wrk
rounds its p50 to 10 µs) and the mean outside the model run (the mean latency minus the node's
own mean model run on the same requests: its overhead, with the VM's drifting model speed
cancelled out). Not part of ``make bench``: a tool for judging
a change on this drifting VM, where only paired, interleaved runs say anything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import bench.serving as S
from artifacts.cli.procs import Child
from bench import wrk
from bench.c1_account import scrape
from bench.common import WORK_DIR, isolated

TURNS, TURN_S, C64_S = 4, 3.0, 6.0
ROOT = Path(__file__).resolve().parent.parent


def checkout(ref: str) -> Path:
    """``ref``'s tree in bench/.work/ab-base (a detached worktree, replaced each run)."""
    dest = WORK_DIR / "ab-base"
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(dest)],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(dest), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return dest


class TreeEdge(S.Edge):
    """An edge node run from the source tree at ``tree`` (its packages shadow this one's)."""

    def __init__(self, stack: S.Stack, name: str, tree: Path, sections: dict) -> None:
        orig = S.Child

        def child(label: str, argv: list[str], log: Path) -> Child:
            return orig(label, argv, log, env={**_env(), "PYTHONPATH": str(tree)}, cwd=tree)

        found = subprocess.run(
            [sys.executable, "-c", "import edge_runtime; print(edge_runtime.__file__)"],
            cwd=tree,
            env={**_env(), "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert found.startswith(str(tree)), f"{name} would import {found}, not {tree}'s"
        S.Child = child  # type: ignore[assignment,misc]
        try:
            super().__init__(stack, name, sections)
        finally:
            S.Child = orig  # type: ignore[misc]


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def main() -> None:
    base_ref = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    base_tree = checkout(base_ref)
    stack = S.Stack(WORK_DIR / "minilm-bundles")
    nodes: dict[str, S.Edge] = {}
    try:
        cfg = {"result_cache": {"max_bytes": 0}}
        nodes["base"] = TreeEdge(stack, "ab-base", base_tree, cfg)
        nodes["head"] = TreeEdge(stack, "ab-head", ROOT, cfg)
        scripts = S.bodies(S.EDGE_MODEL)
        urls = {n: f"{e.url}/v1/embeddings" for n, e in nodes.items()}
        for u in urls.values():
            wrk.run(u, scripts["queries"], 4, 2)  # warm
        per: dict[str, dict[str, list[float]]] = {
            n: {"c1": [], "c1_mean": [], "c1_outside": [], "gap": [], "c64_rps": [], "c64_p99": []}
            for n in nodes
        }
        raws = []
        for r in range(rounds):
            raw = isolated(S.raw_latency, str(nodes["head"].bundle))["p50_ms"]
            raws.append(raw)
            order = list(nodes)
            turns, means, outside = c1_turns(nodes, urls, scripts["queries"], r)
            for n in order if r % 2 == 0 else order[::-1]:
                c64 = wrk.run(urls[n], scripts["products"], 64, C64_S)
                per[n]["c64_rps"].append(c64["rps"])
                per[n]["c64_p99"].append(c64["p99_ms"])
                per[n].setdefault("c64_errors", []).append(c64["errors"])
                time.sleep(1)
            for n, ts in turns.items():
                mid = sorted(ts)[len(ts) // 2]
                per[n]["c1"].append(mid)
                per[n]["c1_mean"].append(sorted(means[n])[len(ts) // 2])
                per[n]["c1_outside"].append(sorted(outside[n])[len(ts) // 2])
                per[n]["gap"].append(mid - raw)
            print(
                f"round {r + 1}: raw {raw:.3f} ms; "
                + "; ".join(
                    f"{n} c=1 turns {[round(x, 3) for x in turns[n]]} "
                    f"outside the run {per[n]['c1_outside'][-1]:.3f} ms "
                    f"c=64 {per[n]['c64_rps'][-1]:.0f}/s p99 {per[n]['c64_p99'][-1]:.0f} ms "
                    f"errors {per[n]['c64_errors'][-1]}"
                    for n in nodes
                ),
                flush=True,
            )
        print(f"\nraw backend batch-1 p50: {S.fmt(raws, 3, ' ms')}")
        for n, v in per.items():
            print(
                f"{n}: c=1 p50 {S.fmt(v['c1'], 3, ' ms')}; p50 − raw {S.fmt(v['gap'], 3, ' ms')};"
                f" mean {S.fmt(v['c1_mean'], 3, ' ms')};"
                f" outside the run {S.fmt(v['c1_outside'], 3, ' ms')};"
                f" c=64 products {S.fmt(v['c64_rps'], 0, '/s')} p99 {S.fmt(v['c64_p99'], 0, ' ms')}"
            )
        diff = [h - b for h, b in zip(per["head"]["c1"], per["base"]["c1"], strict=True)]
        print(f"head − base, c=1 p50 per round: {S.fmt(diff, 3, ' ms')}")
        diff = [h - b for h, b in zip(per["head"]["c1_mean"], per["base"]["c1_mean"], strict=True)]
        print(f"head − base, c=1 mean per round: {S.fmt(diff, 3, ' ms')}")
        diff = [
            h - b for h, b in zip(per["head"]["c1_outside"], per["base"]["c1_outside"], strict=True)
        ]
        print(f"head − base, c=1 outside the model run per round: {S.fmt(diff, 3, ' ms')}")
        out = WORK_DIR / "c1_ab.json"
        out.write_text(json.dumps({"base": base_ref, "raw": raws, "nodes": per}, indent=1))
    finally:
        for e in nodes.values():
            e.close()
        stack.close()


def c1_turns(nodes: dict, urls: dict[str, str], script: Path, r: int) -> tuple[dict, dict, dict]:
    """Both nodes at c=1 in TURNS alternating turns (the order flipped every turn): per node,
    each turn's p50, mean latency and mean time outside the model run (ms)."""
    turns: dict[str, list[float]] = {n: [] for n in nodes}
    means: dict[str, list[float]] = {n: [] for n in nodes}
    outside: dict[str, list[float]] = {n: [] for n in nodes}
    order = list(nodes)
    for t in range(TURNS):
        for n in order if (r + t) % 2 == 0 else order[::-1]:
            before = scrape(nodes[n].url)["shipyard_inference_seconds"]
            got = wrk.run(urls[n], script, 1, TURN_S)
            after = scrape(nodes[n].url)["shipyard_inference_seconds"]
            run_ms = (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 1e3
            # outside the model run: mean latency − the mean model run of the same requests
            # (the node's own histogram), so the VM's drifting model speed cancels out
            outside[n].append(1e3 / got["rps"] - run_ms)
            turns[n].append(got["p50_ms"])
            # c=1: one request at a time, so 1/rate is the mean latency to the µs
            # (wrk prints its p50 to 10 µs)
            means[n].append(1e3 / got["rps"])
            time.sleep(0.3)
    return turns, means, outside


if __name__ == "__main__":
    main()
