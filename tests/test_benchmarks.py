"""The benchmarks still run (tiny sizes); their timings are never asserted here."""

from __future__ import annotations

import json
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



def test_two_trees_are_compared_side_by_side(tmp_path):
    # The same tree twice, tiny sizes: every graph and metric comes back for both, with a ratio.
    completed = subprocess.run([sys.executable, "-m", "benchmarks.compare_trees", "--before", str(REPO),
                                "--rounds", "1", "--sizes", "10", "--repeats", "1", "--json", str(tmp_path / "t.json")],
                               capture_output=True, text=True, cwd=REPO, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = json.loads((tmp_path / "t.json").read_text())
    assert set(table) == {"chain-10", "fan-10"}
    for metrics in table.values():
        for metric in ("sfumato_cold", "sfumato_cached"):
            assert metrics[metric]["before"] > 0 and metrics[metric]["after"] > 0 and metrics[metric]["ratio"] > 0
    assert [line.split(" | ")[0] for line in completed.stdout.splitlines()[2:]] == ["| chain", "| fan"]


def test_comparing_with_an_unknown_revision_says_so():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.compare_trees", "--before", "no-such-revision"],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
    assert completed.returncode == 2
    assert "'no-such-revision' is neither a folder holding a sfumato tree" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_phases_of_a_cold_run_are_compared_side_by_side():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.compare_trees", "--before", str(REPO), "--phases",
                                "--rounds", "1", "--sizes", "10", "--repeats", "1"],
                               capture_output=True, text=True, cwd=REPO, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    header, _, *rows = completed.stdout.splitlines()
    for phase in ("load", "plan", "execute", "cold"):
        assert f"{phase} before | {phase} after | ratio" in header
    assert [row.split(" | ")[0] for row in rows] == ["| chain", "| fan"]
