"""What is installed, as the CLI lists it: ``sfumato plugins``, ``sfumato models`` and ``sfumato nodes show``."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any

import pytest

import sfumato
from sfumato.cli import main


@dataclasses.dataclass
class Swatch:
    """A value type of the test plugin."""

    colour: str


@sfumato.node("everything.mix", version=2, category="test")
def swatch_mix(shade: str = "red") -> str:
    """A node the test plugin's graph type and migration are about."""
    return shade


def _everything_plugin(weights: Path) -> types.ModuleType:
    """A plugin using every registration hook once, to see each in the listing."""
    module = types.ModuleType("everything")

    @sfumato.hookimpl
    def sfumato_port_types() -> list[Any]:
        return [sfumato.PortType("EverythingSwatch", Swatch, "a colour swatch")]

    @sfumato.hookimpl
    def sfumato_port_conversions() -> list[Any]:
        return [("Text", "EverythingSwatch", Swatch)]

    @sfumato.hookimpl
    def sfumato_value_codecs() -> list[Any]:
        return [sfumato.ValueCodec.for_dataclass(Swatch, "everything.Swatch")]

    @sfumato.hookimpl
    def sfumato_model_sources() -> list[Any]:
        return [sfumato.ModelSource("everything-here", weights, "weights that exist", kind="gan"),
                sfumato.ModelSource("everything-gone", weights / "gone", "weights that do not", kind="vae")]

    @sfumato.hookimpl
    def sfumato_cli_commands(subparsers: Any) -> None:
        subparsers.add_parser("paint", help="paint swatches")

    @sfumato.hookimpl
    def sfumato_executors() -> dict[str, Any]:
        return {"easel": lambda **options: None}

    @sfumato.hookimpl
    def sfumato_node_types() -> list[Any]:
        return [swatch_mix]

    @sfumato.hookimpl
    def sfumato_graph_types() -> list[Any]:
        graph = sfumato.Graph.from_dict({"version": 1, "nodes": {"mix": {"type": "everything.mix"}}})
        return [sfumato.GraphType("everything.mixed", graph, "a mix as a graph")]

    @sfumato.hookimpl
    def sfumato_migrations() -> list[Any]:
        return [sfumato.Migration("everything.mix", 1, renamed={"colour": "shade"})]

    for hook in (sfumato_port_types, sfumato_port_conversions, sfumato_value_codecs, sfumato_model_sources,
                 sfumato_cli_commands, sfumato_executors, sfumato_node_types, sfumato_graph_types,
                 sfumato_migrations):
        setattr(module, hook.__name__, hook)
    return module


@pytest.fixture
def everything(tmp_path, monkeypatch) -> Path:
    """The CLI's registry holds just the everything plugin; returns its existing weights folder."""
    import sfumato.registry as registry_module

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(registry_module, "_default",
                        sfumato.Registry.load(entry_points=False, plugins=[_everything_plugin(weights)]))
    return weights


def test_plugins_lists_each_plugins_port_types_conversions_codecs_models_commands_and_executors(everything, capsys):
    assert main(["plugins", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "everything" and listed["status"] == "ok"
    assert listed["port_types"] == ["EverythingSwatch"]
    assert listed["conversions"] == ["Text -> EverythingSwatch"]
    assert listed["codecs"] == ["everything.Swatch"]
    assert listed["models"] == ["everything-gone", "everything-here"]
    assert listed["commands"] == ["paint"]
    assert listed["executors"] == ["easel"]
    assert listed["graph_types"] == ["everything.mixed"]
    assert listed["migrations"] == ["everything.mix v1 -> v2"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    for text in ("ports: EverythingSwatch", "conversions: Text -> EverythingSwatch", "codecs: everything.Swatch",
                 "commands: paint", "executors: easel", "graph types: everything.mixed",
                 "migrations: everything.mix v1 -> v2"):
        assert text in table


def test_plugins_json_lists_the_builtin_plugins_commands_and_models(capsys):
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert plugins["server"]["commands"] == ["serve"] and plugins["ray"]["executors"] == ["ray"]
    assert "tiny-shapes-diffusion" in plugins["zoo"]["models"] and "image.save" in plugins["imaging"]["node_ids"]


def test_models_lists_sources_with_where_their_weights_are_and_whether_they_exist(everything, capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["everything-here"] == {
        "name": "everything-here", "plugin": "everything", "kind": "gan", "description": "weights that exist",
        "generator": "", "family": "", "sha256": "", "path": str(everything), "exists": True, "problem": "",
        "generator_problem": ""}
    assert rows["everything-gone"]["exists"] is False and rows["everything-gone"]["kind"] == "vae"
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "everything-here" in table and "(missing)" in table


def test_models_lists_a_source_whose_location_fails_or_whose_generator_is_missing(monkeypatch, capsys):
    import sfumato.registry as registry_module

    def nowhere() -> Path:
        raise FileNotFoundError("the package holding the weights is not installed")

    module = types.ModuleType("lost")
    module.sfumato_model_sources = sfumato.hookimpl(lambda: [  # type: ignore[attr-defined]
        sfumato.ModelSource("lost-model", nowhere, generator="lost.paint")])
    monkeypatch.setattr(registry_module, "_default", sfumato.Registry.load(entry_points=False, plugins=[module]))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cannot locate" in out and "cannot generate" in out and "Traceback" not in out
    assert main(["models", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["exists"] is False and "not installed" in row["problem"]
    assert row["generator"] == "lost.paint" and "'lost.paint'" in row["generator_problem"]


def test_models_lists_the_shipped_zoo_models_as_present(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny-shapes-diffusion"]["plugin"] == "zoo" and rows["tiny-shapes-diffusion"]["exists"] is True


@pytest.fixture
def test_nodes(monkeypatch) -> None:
    """The CLI's registry: the installed plugins and the test nodes of conftest."""
    import sfumato.registry as registry_module
    from conftest import test_plugin

    monkeypatch.setattr(registry_module, "_default", sfumato.Registry.load(plugins=[test_plugin]))


@pytest.mark.parametrize("node_id, lines", [
    ("test.counter", ["kind: class node", "batched: no", "cached: by its inputs; in memory and the disk cache"]),
    ("test.scale", ["kind: function node", "batched: yes"]),
    ("test.clock", ["cached: never: volatile"]),
    ("test.record", ["output node: it always runs",
                     "reads from the run context: device, dtype, seed, output_dir, params, graph\n"]),
    ("test.add", ["reads from the run context: nothing (it takes no run context)"]),
])
def test_nodes_show_says_how_a_node_runs_and_is_cached(test_nodes, node_id, lines, capsys):
    assert main(["nodes", "show", node_id]) == 0
    out = capsys.readouterr().out
    assert f"{node_id} v1" in out and "plugin sfumato_test_nodes local" in out
    for line in lines:
        assert line in out


def test_nodes_show_json_has_kind_batching_cache_context_plugin_version_and_input_ranges(test_nodes, capsys):
    assert main(["nodes", "show", "test.counter", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["class_node"] is True and shown["batched"] is False and shown["volatile"] is False
    assert shown["plugin"] == "sfumato_test_nodes" and shown["plugin_version"] == "local"
    assert main(["nodes", "show", "test.record", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["context_keys"] == ["device", "dtype", "seed", "output_dir", "params", "graph"]
    assert shown["output_node"] is True
    assert main(["nodes", "show", "test.clock", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"]["volatile"] is True
    assert main(["nodes", "show", "image.save", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cache"]["checks_entries"] is True and "run_index" in shown["context_keys"]
    assert main(["nodes", "show", "test.add", "--json"]) == 0
    [_, b] = json.loads(capsys.readouterr().out)["inputs"]
    assert (b["name"], b["type"], b["ge"], b["le"]) == ("b", "Float", -100, 100)


def test_nodes_show_says_a_graph_type_expands_into_its_inner_nodes(everything, capsys):
    assert main(["nodes", "show", "everything.mixed"]) == 0
    out = capsys.readouterr().out
    assert "kind: graph type: expands into its 1 inner node(s)" in out and "batched:" not in out
    assert main(["nodes", "show", "everything.mixed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["graph_type"] is True
