"""Every saved PNG can be run again from its metadata, giving the same pixels."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfumato import ImageBatch, MetadataError, Registry, hookimpl, node, read_png_metadata
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


# -- what made an image, and making it again: provenance and --check ---------------------------


def _swatch_plugin(version: int, red: int) -> types.ModuleType:
    """A plugin "swatch" whose node ``swatch.fill`` (at ``version``) paints an 8x8 image of red ``red``."""

    @node("swatch.fill", version=version, category="test")
    def fill(green: int = 0) -> ImageBatch:
        """A flat colour."""
        return ImageBatch((Image.new("RGB", (8, 8), (red, green, 0)),))

    module = types.ModuleType("swatch")
    module.sfumato_node_types = hookimpl(lambda: [fill])  # type: ignore[attr-defined]
    return module


SWATCH_GRAPH = {"version": 1, "name": "swatch", "nodes": {
    "fill": {"type": "swatch.fill", "inputs": {"green": 7}},
    "save": {"type": "image.save", "inputs": {"images": {"from": "fill.images"}}}}}


@pytest.fixture
def use_plugins(monkeypatch):
    """Make the CLI's registry the installed plugins plus the given ones (call again to swap them)."""
    import sfumato.registry as registry_module

    def use(*plugins: types.ModuleType) -> None:
        monkeypatch.setattr(registry_module, "_default", Registry.load(plugins=plugins))

    return use


@pytest.fixture
def swatch_png(tmp_path, use_plugins, capsys) -> str:
    """A PNG made by swatch.fill v1 (red 200)."""
    use_plugins(_swatch_plugin(1, 200))
    (tmp_path / "swatch.json").write_text(json.dumps(SWATCH_GRAPH))
    assert main(["run", str(tmp_path / "swatch.json"), "--out", str(tmp_path / "made"), "--json"]) == 0
    [path] = json.loads(capsys.readouterr().out)["files"]
    return path


def test_png_metadata_records_node_versions_plugins_device_and_dtype(tmp_path, capsys):
    import torch  # noqa: F401 - device and dtype are recorded where torch computes

    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--device", "cpu",
                 "--json"]) == 0
    [path] = json.loads(capsys.readouterr().out)["files"]
    stored = read_png_metadata(path)
    assert stored["nodes"]["image.save"] == {"version": 1, "plugin": "imaging"}
    assert stored["nodes"]["text.template"]["plugin"] == "text" and set(stored["nodes"]) == {
        entry["type"] for entry in stored["graph"]["nodes"].values()}
    assert stored["plugins"]["imaging"] and (stored["device"], stored["dtype"]) == ("cpu", "float32")


def test_damaged_node_versions_in_png_metadata_are_refused():
    from sfumato.run.metadata import check_metadata

    graph = {"version": 1, "nodes": {}}
    with pytest.raises(MetadataError, match="'nodes' must map node types"):
        check_metadata({"graph": graph, "nodes": {"image.save": "v1"}})
    with pytest.raises(MetadataError, match="'device' must be a string"):
        check_metadata({"graph": graph, "device": 3})


def test_png_rerun_with_another_node_version_warns_naming_what_made_it(swatch_png, tmp_path, use_plugins, capsys):
    use_plugins(_swatch_plugin(2, 200))
    assert main(["run", swatch_png, "--out", str(tmp_path / "again"), "--json"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "made with node swatch.fill v1 from plugin swatch local; installed: v2" in err


def test_png_rerun_with_the_same_versions_gives_no_warning(swatch_png, tmp_path, capsys):
    assert main(["run", swatch_png, "--out", str(tmp_path / "again"), "--json"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_png_rerun_without_its_plugin_exits_2_naming_the_node_version_and_plugin(swatch_png, tmp_path,
                                                                               use_plugins, capsys):
    use_plugins()
    assert main(["run", swatch_png, "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "made with node swatch.fill v1 from plugin swatch local" in err
    assert "plugin swatch is not installed" in err and "Traceback" not in err
    assert not (tmp_path / "again").exists()


def test_check_of_a_png_whose_pixels_come_out_the_same_exits_0(tmp_path, capsys):
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path / "a"),
                 "--set", "seed=3", "--json"]) == 0
    [path] = json.loads(capsys.readouterr().out)["files"]
    assert main(["run", path, "--check"]) == 0
    assert "match" in capsys.readouterr().out
    assert main(["run", path, "--check", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["match"] is True and result["max_difference"] == 0 and result["differences"] == []
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == [Path(path).name]  # --check writes nothing here


def test_check_of_a_png_whose_pixels_differ_exits_1_saying_what_differs(swatch_png, use_plugins, capsys):
    use_plugins(_swatch_plugin(2, 205))
    assert main(["run", swatch_png, "--check", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["match"] is False and result["max_difference"] == 5
    assert result["pixels_different"] == result["pixels"] == 64
    assert result["differences"] == ["node swatch.fill: v1 from plugin swatch then, v2 from plugin swatch now"]
    assert main(["run", swatch_png, "--check"]) == 1
    out = capsys.readouterr().out
    assert "differs in 64 of 64 pixels (largest difference 5" in out and "node swatch.fill: v1" in out


def test_check_with_nothing_recorded_differing_says_a_node_may_not_be_deterministic(swatch_png, use_plugins,
                                                                                     capsys):
    use_plugins(_swatch_plugin(1, 201))  # same version, other pixels: what a nondeterministic node does
    assert main(["run", swatch_png, "--check"]) == 1
    assert "may not be deterministic" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--set", "green=1"], ["--seed", "4"], ["--sweep", "green=1,2"]])
def test_check_takes_no_options_that_change_the_run(swatch_png, extra, capsys):
    assert main(["run", swatch_png, "--check", *extra]) == 2
    assert "--check makes the image again as it was made" in capsys.readouterr().err


def test_check_of_a_graph_file_exits_2(capsys):
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--check"]) == 2
    assert "no .png" in capsys.readouterr().err


def test_a_subgraph_file_in_a_stored_graph_is_not_reported_as_a_missing_node_type():
    from sfumato.run.metadata import provenance_issues

    data = {"graph": {"version": 1, "nodes": {"sub": {"type": "graph:blur-twice.json"},
                                              "gone": {"type": "swatch.fill"}}}}
    missing, changed = provenance_issues(data, Registry.load(entry_points=False))
    assert [issue.node for issue in missing] == ["gone"] and changed == []
    assert "(its version is not recorded)" in missing[0].message


def test_metadata_differences_name_versions_device_and_dtype_but_not_unrecorded_ones():
    from sfumato.run.metadata import metadata_differences

    made = {"versions": {"torch": "2.12.0"}, "plugins": {"zoo": "0.1.0"},
            "nodes": {"gan.generate": {"version": 1, "plugin": "zoo"}}, "device": "cuda:0", "dtype": "bfloat16"}
    remade = {"versions": {"torch": "2.13.0"}, "plugins": {"zoo": "0.2.0", "unused": "1.0"},
              "nodes": {"gan.generate": {"version": 2, "plugin": "zoo"}}, "device": "cpu", "dtype": "float32"}
    assert metadata_differences(made, remade) == [
        "library torch: 2.12.0 then, 2.13.0 now", "plugin zoo: 0.1.0 then, 0.2.0 now",
        "node gan.generate: v1 from plugin zoo then, v2 from plugin zoo now",
        "device: cuda:0 then, cpu now", "dtype: bfloat16 then, float32 now"]
    # An image made where no node computed on torch records no device: nothing to compare.
    assert metadata_differences({"device": None, "dtype": None}, remade) == []


@pytest.mark.slow
def test_check_of_the_second_image_of_a_generated_batch_matches(tmp_path, capsys):
    from tiny_models import save_tiny_zoo_diffusion

    (tmp_path / "g.json").write_text(json.dumps(_generator_graph(save_tiny_zoo_diffusion(tmp_path / "model"))))
    assert main(["run", str(tmp_path / "g.json"), "--out", str(tmp_path / "a"), "--set", "batch_size=2",
                 "--device", "cpu", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["files"][1]
    stored = read_png_metadata(second)
    assert (stored["device"], stored["dtype"], stored["index"]) == ("cpu", "float32", 1)
    assert main(["run", second, "--check", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["match"] is True


def test_check_of_a_png_whose_graph_no_longer_writes_that_image_exits_1(swatch_png, tmp_path, use_plugins, capsys):
    @node("swatch.fill", version=1, category="test")
    def nothing(green: int = 0) -> ImageBatch:
        """No images at all."""
        return ImageBatch(())

    module = types.ModuleType("swatch")
    module.sfumato_node_types = hookimpl(lambda: [nothing])  # type: ignore[attr-defined]
    use_plugins(module)
    assert main(["run", swatch_png, "--check"]) == 1
    assert "wrote no image 0 from node 'save'" in capsys.readouterr().err
