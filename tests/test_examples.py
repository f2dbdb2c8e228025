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


def test_readme_quickstart_gives_measured_times_and_the_fast_subset():
    import re

    readme = (REPO / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert 'pytest -m "not slow"' in quickstart and "about a minute" not in readme
    assert len(re.findall(r"\d+ min \d+ s", quickstart)) >= 3  # first command, tests, fast subset


def test_every_graph_the_readme_runs_by_name_ships():
    import re

    from sfumato import shipped_graphs

    readme = (REPO / "README.md").read_text()
    names = set(re.findall(r"sfumato (?:run|validate) ([a-z][a-z-]+)\b(?!\.)", readme)) - {"out", "graph"}
    assert names and names <= set(shipped_graphs()), names - set(shipped_graphs())
