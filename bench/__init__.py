"""Benchmarks: side by side in one run, ratios reported, results in bench/report/."""
