"""``make bench``: every benchmark, each in its own process, into bench/report/REPORT.md."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import REPORT_DIR, machine, stamp

PARTS = [
    ("ceiling", "bench.ceiling", "This machine's ceiling"),
    (
        "backends",
        "bench.backends",
        "Backends: Shipyard bundles vs PyTorch eager and sentence-transformers",
    ),
    (
        "serving",
        "bench.serving",
        "Serving: edge vs raw backend vs infinity-emb; cache; overload; memory",
    ),
    ("search", "bench.search", "Catalog search: the shipped index vs faiss and exact search"),
    ("pareto", "bench.pareto", "Pruned variants: layers x precision, speed vs quality"),
    ("registry", "bench.registry", "Registry: blob streaming and resolve latency"),
    (
        "embed_queue",
        "bench.embed_queue",
        "Catalog queue: NATS JetStream re-embedding vs the HTTP API; interactive p99 under bulk",
    ),
    (
        "scale_out",
        "bench.scale_out",
        "Scaling out: OCI blobs (redirect vs through central), two replicas, a simulated fleet",
    ),
]


def main() -> None:
    only = set(sys.argv[1:])
    ran = []
    for name, module, title in PARTS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        print(f"== {title}", flush=True)
        proc = subprocess.run([sys.executable, "-m", module])
        ran.append((name, title, proc.returncode, time.monotonic() - t0))
    failed = {n for n, _t, rc, _s in ran if rc != 0}
    sections = []
    for name, _module, title in PARTS:
        path = REPORT_DIR / f"{name}.md"
        if path.exists():
            body = path.read_text().split("\n", 1)[1]
            if name in failed:
                body = f"\n**This run's `{name}` stage failed: the figures below are from an earlier run.**\n{body}"
            sections.append(f"## {title}\n{body}")
    status = "\n".join(
        f"- {n}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {s:.0f} s" for n, _t, rc, s in ran
    )
    report = f"""# Shipyard benchmark report — {stamp()}

Machine: {machine()}.
Every figure is measured side by side in the same run on this machine; ratios compare against
what users would otherwise run. This run:
{status}

{chr(10).join(sections)}
"""
    (REPORT_DIR / "REPORT.md").write_text(report)
    print(f"wrote {REPORT_DIR / 'REPORT.md'}")
    if any(rc != 0 for *_x, rc, _s in ran):
        sys.exit(1)


if __name__ == "__main__":
    main()
