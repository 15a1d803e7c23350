"""Shipyard builder: Hugging Face model → ONNX master → per-target bundles held to FP32 by a gate."""
