"""What the exporter and the runtime share, with neither torch nor TensorRT: the model descriptor, the
artifacts and their checks, errors, signals, atomic files, the canary with its thresholds and metrics, and
NVIDIA device facts. It imports neither `export` nor `runtime` (tests/test_layering.py)."""
