"""Build-host benchmark recorded in every manifest: batch-1 latency on short queries and
batch-32 throughput on product titles, same inputs for every target of a build."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import numpy as np

from artifacts.manifest import HostInfo
from artifacts.textproc import Item, TextEncoder, collate
from builder.runners import Runner


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(threads: int) -> HostInfo:
    return HostInfo(cpu_model=cpu_model(), arch=platform.machine(), threads=threads)


@dataclass(frozen=True)
class SpeedResult:
    p50_ms: float
    p99_ms: float
    throughput: float  # items/s at batch ``batch``
    batch: int

    @property
    def score(self) -> float:
        """One number to rank candidates: geometric mean of batch-1 and batch-N speed."""
        return float(np.sqrt((1000.0 / self.p50_ms) * self.throughput))


class Workload:
    """Pre-tokenised benchmark inputs, built once per build so every target sees the same."""

    def __init__(
        self,
        encoder: TextEncoder,
        short: list[Item],
        batch_items: list[Item],
        *,
        batch: int = 32,
        n_latency: int = 150,
        n_batches: int = 8,
    ) -> None:
        self.encoder = encoder
        self.short = encoder.encode(short[:n_latency])
        items = batch_items[: batch * n_batches]
        self.batches = [encoder.encode(items[i : i + batch]) for i in range(0, len(items), batch)]
        self.batch = batch

    def measure(self, runner: Runner, *, warmup: int = 10) -> SpeedResult:
        names = runner.input_names
        singles = [collate([e], names) for e in self.short]
        batches = [collate(b, names) for b in self.batches]
        for feeds in singles[:warmup]:
            runner(feeds)
        runner(batches[0])
        lat = []
        for feeds in singles:
            t0 = time.perf_counter()
            runner(feeds)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = 0
        for feeds in batches:
            runner(feeds)
            n += feeds["input_ids"].shape[0]
        elapsed = time.perf_counter() - t0
        return SpeedResult(
            p50_ms=float(np.percentile(lat, 50) * 1e3),
            p99_ms=float(np.percentile(lat, 99) * 1e3),
            throughput=n / elapsed,
            batch=self.batch,
        )
