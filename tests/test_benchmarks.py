"""The benchmarks still run (tiny sizes); their timings are never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_benchmark_runs_with_tiny_sizes(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path / "r.json")],
                               capture_output=True, text=True, cwd=REPO, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for name in ("overhead", "generation", "incremental", "schedulers", "cold_start", "sweep", "encoding", "server"):
        assert f"[{name}]" in completed.stdout
    assert completed.stdout.count("ratio") >= 8
