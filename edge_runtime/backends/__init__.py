"""Inference engines behind one small Protocol, one module per engine, imported lazily."""

from __future__ import annotations

import importlib

from edge_runtime.backends.base import Backend, BackendSettings

MODULES = {
    "onnxruntime": "edge_runtime.backends.onnxruntime",
    "openvino": "edge_runtime.backends.openvino",
    "tensorrt": "edge_runtime.backends.tensorrt",
}


def load_backend(bundle_dir, manifest, settings: BackendSettings) -> Backend:
    """Open the bundle's model with the engine its manifest names (raises on failure)."""
    from edge_runtime.errors import BackendUnavailable

    name = manifest.target.backend
    if name not in MODULES:
        raise BackendUnavailable(f"no backend module for {name!r}")
    module = importlib.import_module(MODULES[name])
    return module.open_backend(bundle_dir, manifest, settings)


__all__ = ["Backend", "BackendSettings", "load_backend"]
