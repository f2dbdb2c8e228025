"""sfumato's benchmarks: side-by-side measurements, run with ``python -m benchmarks``."""
