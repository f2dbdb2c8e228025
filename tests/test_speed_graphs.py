"""The shipped graphs that generate with a diffusion UNet take a ``speed`` parameter (issue 17):
``sfumato run text-to-image --set speed=@recipe.json``; its default ``{}`` runs as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfumato import Engine, Graph, read_png_metadata, resolve_graph_path, shipped_graphs
from sfumato.cli import main

GENERATORS = ("generate.image", "diffusion.generate")
#: Generation nodes whose model is fixed to a backend without a UNet (the recipe would be ignored).
NOT_DIFFUSION = ("tiny-shapes-vae", "tiny-shapes-gan")
#: Its base and refiner share one schedule (steps, denoising_end/start): a recipe's steps or sampler on the
#: base alone would split them apart, so it takes no recipe until sdxl.refine does.
WITHOUT_SPEED = ("sdxl-refiner",)


def _generation_nodes(document: dict) -> list[tuple[str, dict]]:
    return [(node_id, spec) for node_id, spec in document["nodes"].items()
            if spec["type"] in GENERATORS and spec.get("inputs", {}).get("model") not in NOT_DIFFUSION]


def test_every_shipped_graph_that_generates_with_diffusion_exposes_speed_wired_to_its_generator():
    documents = {name: json.loads(path.read_text()) for name, path in shipped_graphs().items()}
    generating = {name: doc for name, doc in documents.items() if _generation_nodes(doc) and name not in WITHOUT_SPEED}
    assert {"text-to-image", "stable-diffusion", "sdxl", "make-images"} <= set(generating)
    for name, document in generating.items():
        assert document["params"]["speed"]["type"] == "json" and document["params"]["speed"]["default"] == {}, name
        for node_id, spec in _generation_nodes(document):
            assert spec["inputs"]["speed"] == {"param": "speed"}, (name, node_id)


def _generated(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in result.values["generate"]["images"].images])


def test_the_speed_parameter_reaches_the_generator_and_its_default_runs_as_before(tmp_path):
    graph = Graph.load(resolve_graph_path("text-to-image"))
    engine = Engine(device="cpu", cache=False, output_dir=tmp_path)
    params = {"batch_size": 1, "steps": 6}
    before = _generated(engine.run(graph, params))
    assert np.array_equal(_generated(engine.run(graph, {**params, "speed": {}})), before)
    assert not np.array_equal(_generated(engine.run(graph, {**params, "speed": {"step_cache": 3}})), before)


def test_text_to_image_takes_a_recipe_file_from_the_command_line_and_keeps_it_in_the_png(tmp_path, capsys):
    recipe = {"step_cache": 2}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    out = tmp_path / "out"
    assert main(["run", "text-to-image", "--out", str(out), "--no-cache", "--json", "--device", "cpu",
                 "--set", "batch_size=1", "--set", "steps=4", "--set", f"speed=@{tmp_path / 'recipe.json'}"]) == 0
    [path] = json.loads(capsys.readouterr().out)["files"]
    assert read_png_metadata(path)["params"]["speed"] == recipe


@pytest.mark.parametrize("recipe, named", [('{"warp_drive": true}', "warp_drive"),
                                           ('{"step_cache": 2, "sampler": "tcd"}', "speed.step_cache=2")])
def test_a_bad_recipe_on_the_command_line_exits_2_naming_the_lever(tmp_path, capsys, recipe, named):
    assert main(["run", "text-to-image", "--out", str(tmp_path), "--no-cache", "--set", f"speed={recipe}"]) == 2
    assert named in capsys.readouterr().err
