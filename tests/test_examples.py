"""The example script runs as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_build_and_run_example(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO / "examples" / "build_and_run.py"), str(tmp_path)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "new seed:" in completed.stdout and "'encode': 'cached'" in completed.stdout
    assert (tmp_path / "shapes-sheet.json").exists()
    assert len(list(tmp_path.glob("shapes-sheet-*.png"))) == 5  # two single runs, three sweep runs
