"""The edge and the contract stay light: no torch/transformers/optimum on import — checked on
the modules an edge node really loads, each in a fresh interpreter."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "optimum", "nncf")


@pytest.mark.parametrize(
    "module",
    [
        "artifacts",
        "artifacts.bundle",
        "artifacts.targets",
        "artifacts.publish",
        "artifacts.cli",
        "artifacts.cli.registry",
        "edge_runtime",
        "edge_runtime.node",
        "edge_runtime.http.app",
        "edge_runtime.http.api_keys",
        "edge_runtime.model_service",
        "edge_runtime.sync",
        "edge_runtime.channel_metadata",
        "edge_runtime.cli",
        "edge_runtime.backends.onnxruntime",
        "edge_runtime.backends.openvino",
        "edge_runtime.backends.tensorrt",
        "central.app",
    ],
)
def test_import_does_not_pull_heavy_deps(module):
    code = (
        f"import sys, {module}; heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"{module} imported {proc.stdout.strip()} {proc.stderr[-500:]}"
