"""The demo's steps end to end on a tiny model: central + worker, build, promote, edge, search
(slow: `make test-slow`; `make demo` runs the real thing in CI too)."""

import psutil
import pytest
from rich.console import Console

from artifacts.cli.demo import Demo, DemoConfig
from tests.factories import TINY_THRESHOLDS, small_datasets


@pytest.mark.slow
def test_demo_pipeline_on_a_tiny_model(tmp_path, tiny_models):
    from artifacts.cli.procs import free_port

    before = {p.pid for p in psutil.process_iter()}
    cal, ev = small_datasets(tmp_path / "data", "embedding")
    cfg = DemoConfig(
        home=str(tmp_path / "demo"),
        model_dir=str(tiny_models["embedding"]),
        model="tiny-demo",
        central_port=free_port(),
        edge_port=free_port(),
        catalog_size=200,
        queries=["running shoes", "coffee beans"],
        calibration=str(cal),
        eval=str(ev),
        thresholds=TINY_THRESHOLDS["embedding"],
    )
    out = Console(record=True, width=200)
    results = Demo(cfg, out).run()
    text = out.export_text()
    assert results["build and promote"]["version"] == 1
    edge = results["start the edge node"]
    assert edge["state"] == "ready" and edge["version"] == 1
    assert {c["target"] for c in edge["candidates"]} == {"onnx-fp32", "onnx-int8", "openvino-int8"}
    search = results["semantic search"]
    assert search["catalog"] == 200 and search["cache"]["hits"] >= 2
    for word in (
        "selection for tiny-demo:stable",
        "latency per query",
        "no stray processes",
        "“running shoes”",
    ):
        assert word in text, word
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before
        and any(
            "central.cli" in a or "edge_runtime.cli" in a or "builder.cli" in a
            for a in (p.info["cmdline"] or [])
        )
    ]
    assert leftovers == []
    # a re-run reuses the home: the identical, verified build answers with v1 without rebuilding
    again = Demo(cfg, Console(record=True, width=200)).run()
    assert again["build and promote"]["version"] == 1
    assert again["build and promote"]["seconds"] < results["build and promote"]["seconds"]
