"""The plugin template installs on its own, is discovered, and its own tests pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "plugin-template"


@pytest.mark.slow
def test_plugin_template_installs_and_passes_its_tests(tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(TEMPLATE)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env_path = str(target)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEMPLATE / "tests")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    listing = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "nodes", "show", "vignette.apply"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": env_path})
    assert listing.returncode == 0 and "strength" in listing.stdout
