"""Resident memory across version swaps: fragmentation or a leak?

The soak benchmark saw an edge node's RSS grow ~60% over its first minutes of a version swap per
minute, then level off. This replays swaps in a fresh process per setting, as the edge does them
(``edge_runtime.loaded_model.open_model`` through the edge's own backend, glibc arenas capped as
the node caps them, batches on an inference thread): open the next model, warm it up, serve
a few serving-shaped batches, close the old one — ``SWAPS`` times — and records RSS after each
swap and Python's own traced allocations (``tracemalloc``). Two settings, in interleaved rounds:

* ``close``: close the old model (as the edge did before);
* ``close + trim``: then hand glibc's free pages back to the OS (``edge_runtime.memory.trim``).

RSS that grows while Python's allocations stay flat is native: freed session memory glibc keeps
(trim returns it) or a native leak (trim does not).

    PYTHONPATH=. python -m bench.swap_memory [rounds] [swaps]   (after ``make bench``)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.common import WORK_DIR, isolated

BUNDLE = WORK_DIR / "minilm-bundles" / "onnx-int8"
SHAPES = [(1, 8), (16, 256), (32, 128), (64, 32), (8, 256)]
SETTINGS = ("close", "close + trim")


def _swaps(setting: str, swaps: int) -> dict:
    import tracemalloc
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from artifacts.bundle import verify_bundle
    from artifacts.cli.procs import rss_mb
    from artifacts.textproc import Encoded
    from edge_runtime import memory
    from edge_runtime.backends import BackendSettings
    from edge_runtime.loaded_model import open_model

    memory.limit_arenas()
    tracemalloc.start()
    thread = ThreadPoolExecutor(1, thread_name_prefix="infer")
    bundle = verify_bundle(Path(BUNDLE), None)

    def batches(model) -> None:
        for n, length in SHAPES:
            enc = Encoded(
                ids=np.full(length, 1000, np.int64),
                type_ids=np.zeros(length, np.int64),
                truncated=False,
            )
            model.run([enc] * n)

    model = open_model(bundle, BackendSettings(threads=0))
    thread.submit(model.warm_up).result()
    thread.submit(batches, model).result()
    rss, traced = [rss_mb()], [tracemalloc.get_traced_memory()[0] / 2**20]
    for _ in range(swaps):
        new = open_model(bundle, BackendSettings(threads=0))
        thread.submit(new.warm_up).result()
        old, model = model, new
        thread.submit(batches, model).result()
        old.close()
        del old
        if setting == "close + trim":
            memory.trim()
        rss.append(rss_mb())
        traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
    thread.shutdown()
    return {"rss": rss, "traced": traced}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    swaps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    got: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(rounds):
        for s in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            res = isolated(_swaps, s, swaps)
            got[s].append(res)
            print(
                f"round {r + 1} {s:13s} RSS after first load {res['rss'][0]:.0f} MB, after "
                f"{swaps} swaps {res['rss'][-1]:.0f} MB (max {max(res['rss']):.0f}); Python "
                f"traced {res['traced'][0]:.1f} → {res['traced'][-1]:.1f} MB",
                flush=True,
            )
    for s in SETTINGS:
        growth = [g["rss"][-1] - g["rss"][0] for g in got[s]]
        traced = [g["traced"][-1] - g["traced"][0] for g in got[s]]
        print(
            f"{s:13s} RSS growth over {swaps} swaps: median {statistics.median(growth):.0f} MB "
            f"[{min(growth):.0f}–{max(growth):.0f}]; Python traced growth median "
            f"{statistics.median(traced):.2f} MB"
        )


if __name__ == "__main__":
    main()
