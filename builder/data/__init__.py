"""Calibration/evaluation text: the shipped seeded e-commerce corpus and user JSONL files."""
