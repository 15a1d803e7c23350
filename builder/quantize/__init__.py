"""Quality-aware INT8 quantization: graph transforms, calibration statistics, per-target ladders."""
