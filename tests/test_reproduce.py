"""Every saved PNG can be run again from its metadata, giving the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sfumato import read_png_metadata
from sfumato.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_png_rerun_gives_the_same_pixels(tmp_path, capsys):
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path / "a"),
                 "--set", "prompt=a purple triangle", "--set", "seed=5", "--json"]) == 0
    [first] = json.loads(capsys.readouterr().out)["files"]
    stored = read_png_metadata(first)
    assert stored["params"]["prompt"] == "a purple triangle" and stored["seed"] == 5
    assert {"sfumato", "torch", "diffusers", "transformers"} <= set(stored["versions"])
    assert stored["plugins"]["text"] and stored["graph"]["nodes"]["save"]["type"] == "image.save"
    assert main(["run", first, "--out", str(tmp_path / "b"), "--json"]) == 0
    [second] = json.loads(capsys.readouterr().out)["files"]
    assert Path(second).name == Path(first).name
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_png_rerun_with_a_changed_parameter(tmp_path, capsys):
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--json"]) == 0
    [first] = json.loads(capsys.readouterr().out)["files"]
    assert main(["run", first, "--out", str(tmp_path / "b"), "--set", "style=bold", "--json"]) == 0
    [second] = json.loads(capsys.readouterr().out)["files"]
    assert read_png_metadata(second)["params"]["style"] == "bold"


def test_inspect_prints_the_stored_graph(tmp_path, capsys):
    main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--json"])
    [path] = json.loads(capsys.readouterr().out)["files"]
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "prompt-card" in out and "seed: 0" in out
    plain = tmp_path / "plain.png"
    Image.new("RGB", (2, 2)).save(plain)
    assert main(["inspect", str(plain)]) == 2


def test_setting_a_new_seed_on_a_png_rerun_changes_the_run_seed(tmp_path, capsys):
    main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--json"])
    [first] = json.loads(capsys.readouterr().out)["files"]
    assert main(["run", first, "--out", str(tmp_path / "b"), "--set", "seed=9", "--json"]) == 0
    [second] = json.loads(capsys.readouterr().out)["files"]
    assert read_png_metadata(second)["seed"] == 9 and Path(second).name.startswith("prompt-card-9-")
