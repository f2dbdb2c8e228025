"""Every saved PNG can be run again from its metadata, giving the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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


def _generator_graph(model: Path) -> dict:
    return {"version": 1, "name": "gen", "params": {
        "prompt": {"type": "str", "default": "a red circle"}, "seed": {"type": "int", "default": 0},
        "batch_size": {"type": "int", "default": 1}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": {"param": "prompt"}}},
        "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"}, "model": str(model),
                                                     "steps": 2, "seed": {"param": "seed"},
                                                     "batch_size": {"param": "batch_size"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}}}


def test_inspect_names_the_seed_that_remakes_one_image_of_a_batch_alone():
    from sfumato import image_seed
    from sfumato.cli.info_cmds import remake_commands

    data = {"graph": _generator_graph(Path("m")), "params": {"seed": 4, "batch_size": 3}, "index": 2}
    alone, batch = remake_commands("out/gen-4-2.png", data)
    assert alone.endswith(f"sfumato run out/gen-4-2.png --set seed={image_seed(4, 2)} --set batch_size=1")
    assert "image 2 of a batch of 3" in alone and batch.endswith("sfumato run out/gen-4-2.png")
    # A graph whose seed and batch_size do not feed one generator gets only the whole-run command.
    other = {"graph": {"nodes": {"card": {"inputs": {"seed": {"param": "seed"}}}}},
             "params": {"seed": 4, "batch_size": 3}, "index": 2}
    [only] = remake_commands("x.png", other)
    assert only.endswith("sfumato run x.png") and "image 2" in only


@pytest.mark.slow
def test_the_command_inspect_prints_remakes_exactly_that_image(tmp_path, capsys):
    import shlex

    from tiny_models import save_tiny_zoo_diffusion

    (tmp_path / "g.json").write_text(json.dumps(_generator_graph(save_tiny_zoo_diffusion(tmp_path / "model"))))
    assert main(["run", str(tmp_path / "g.json"), "--out", str(tmp_path / "a"), "--set", "seed=4",
                 "--set", "batch_size=3", "--json"]) == 0
    third = json.loads(capsys.readouterr().out)["files"][2]
    assert main(["inspect", third]) == 0
    [command] = [line.split(":  ", 1)[1] for line in capsys.readouterr().out.splitlines()
                 if line.startswith("remake exactly this image")]
    arguments = shlex.split(command)
    assert arguments[:2] == ["sfumato", "run"]
    assert main([*arguments[1:], "--out", str(tmp_path / "b"), "--json"]) == 0
    [remade] = json.loads(capsys.readouterr().out)["files"]
    assert np.array_equal(np.asarray(Image.open(third)), np.asarray(Image.open(remade)))
