"""Versioned node entries: older graphs are migrated, newer ones refused, files upgraded."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import test_plugin

import sfumato
from sfumato.cli.main import main


@sfumato.node("test.blend", version=2, category="test", output="value")
def blend(a: float, radius: float = 1.0, sigma: float = 2.0) -> float:
    """Version 2: ``amount`` is now ``radius``, ``legacy`` is gone, and ``sigma`` defaults to 2 (it was 1)."""
    return a * radius + sigma


versions_plugin = types.ModuleType("sfumato_test_versions")


@sfumato.hookimpl
def _node_types() -> list[Any]:
    return [blend]


@sfumato.hookimpl
def _migrations() -> list[Any]:
    return [sfumato.Migration("test.blend", 1, renamed={"amount": "radius"}, removed=("legacy",),
                              old_defaults={"sigma": 1.0})]


versions_plugin.sfumato_node_types = _node_types  # type: ignore[attr-defined]
versions_plugin.sfumato_migrations = _migrations  # type: ignore[attr-defined]

#: A graph file written for test.blend version 1, whose result was a * amount + sigma (sigma defaulting to 1).
WRITTEN_FOR_V1 = {
    "version": 1,
    "nodes": {"n": {"type": "test.number", "inputs": {"value": 3.0}},
              "b": {"type": "test.blend", "version": 1,
                    "inputs": {"a": {"from": "n.value"}, "amount": 2.0, "legacy": True}}},
    "outputs": {"value": "b.value"},
}
#: The same graph written for version 2.
WRITTEN_FOR_V2 = {
    "version": 1,
    "nodes": {"n": {"type": "test.number", "inputs": {"value": 3.0}},
              "b": {"type": "test.blend", "version": 2,
                    "inputs": {"a": {"from": "n.value"}, "radius": 2.0, "sigma": 1.0}}},
    "outputs": {"value": "b.value"},
}


@pytest.fixture
def registry() -> sfumato.Registry:
    return sfumato.Registry.load(plugins=[test_plugin, versions_plugin])


@pytest.fixture
def engine(registry: sfumato.Registry, tmp_path: Path) -> sfumato.Engine:
    return sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out")


def test_graph_written_for_v1_of_a_node_now_v2_gives_the_same_outputs(engine):
    old = engine.run(sfumato.Graph.from_dict(WRITTEN_FOR_V1)).outputs
    new = engine.run(sfumato.Graph.from_dict(WRITTEN_FOR_V2)).outputs
    assert old == new == {"value": 7.0}


def test_loading_an_older_graph_says_what_the_migration_changed(registry):
    warnings = sfumato.validate_graph(sfumato.Graph.from_dict(WRITTEN_FOR_V1), registry, warnings=True)
    assert [(w.path, w.severity) for w in warnings] == [("nodes.b.version", "warning")]
    assert warnings[0].message == ("migrated from test.blend version 1 to 2: input 'amount' renamed to 'radius'; "
                                   "input 'legacy' removed; input 'sigma' set to its old default 1.0")
    plan = sfumato.plan_run(sfumato.Graph.from_dict(WRITTEN_FOR_V1), registry)
    assert [issue.message for issue in plan.migrations] == [warnings[0].message]


def test_migrating_in_memory_leaves_the_loaded_graph_as_it_was(registry):
    graph = sfumato.Graph.from_dict(WRITTEN_FOR_V1)
    sfumato.plan_run(graph, registry)
    assert graph.to_dict()["nodes"]["b"]["inputs"]["amount"] == 2.0


def test_graph_written_for_a_newer_node_version_is_refused_naming_both_versions(registry):
    document = json.loads(json.dumps(WRITTEN_FOR_V2))
    document["nodes"]["b"]["version"] = 3
    issues = sfumato.validate_graph(sfumato.Graph.from_dict(document), registry)
    assert [issue.path for issue in issues] == ["nodes.b.version"]
    assert "written for test.blend version 3, but the installed test.blend is version 2" in issues[0].message


def test_entry_without_a_version_is_taken_as_current(engine):
    document = json.loads(json.dumps(WRITTEN_FOR_V2))
    del document["nodes"]["b"]["version"]
    assert engine.run(sfumato.Graph.from_dict(document)).outputs == {"value": 7.0}


def test_version_step_without_a_migration_is_compatible(registry):
    document = json.loads(json.dumps(WRITTEN_FOR_V2))
    document["nodes"]["n"]["version"] = 1  # test.number is version 1: nothing to do
    assert sfumato.validate_graph(sfumato.Graph.from_dict(document), registry, warnings=True) == []


@pytest.fixture
def cli_registry(registry, monkeypatch):
    monkeypatch.setattr("sfumato.registry._default", registry)
    return registry


def test_upgrade_command_writes_the_migrated_graph_with_node_versions(cli_registry, tmp_path, capsys):
    source = tmp_path / "old.json"
    source.write_text(json.dumps(WRITTEN_FOR_V1))
    assert main(["upgrade", str(source), "-o", str(tmp_path / "new.json")]) == 0
    written = json.loads((tmp_path / "new.json").read_text())
    assert written["nodes"]["b"] == {"type": "test.blend", "version": 2,
                                     "inputs": {"a": {"from": "n.value"}, "radius": 2.0, "sigma": 1.0}}
    assert written["nodes"]["n"]["version"] == 1
    assert json.loads(source.read_text()) == WRITTEN_FOR_V1  # -o leaves the original alone
    assert "input 'amount' renamed to 'radius'" in capsys.readouterr().err


def test_upgrade_command_rewrites_the_file_in_place(cli_registry, tmp_path):
    source = tmp_path / "old.json"
    source.write_text(json.dumps(WRITTEN_FOR_V1))
    assert main(["upgrade", str(source)]) == 0
    assert json.loads(source.read_text())["nodes"]["b"]["version"] == 2
    assert main(["validate", str(source)]) == 0


def test_upgrade_of_a_graph_for_newer_nodes_exits_2(cli_registry, tmp_path, capsys):
    document = json.loads(json.dumps(WRITTEN_FOR_V2))
    document["nodes"]["b"]["version"] = 5
    source = tmp_path / "new.json"
    source.write_text(json.dumps(document))
    assert main(["upgrade", str(source)]) == 2
    assert "version 5" in capsys.readouterr().err


def test_rerunning_a_png_made_with_an_older_node_version_migrates_its_graph(cli_registry, tmp_path, capsys):
    from PIL import Image

    stored = json.loads(json.dumps(WRITTEN_FOR_V1))
    del stored["nodes"]["b"]["version"]  # images record node versions beside the graph
    data = {"format": 1, "graph": stored, "params": {}, "seed": 0,
            "nodes": {"test.blend": {"version": 1, "plugin": "sfumato_test_versions"},
                      "test.number": {"version": 1, "plugin": "sfumato_test_nodes"}}}
    image = tmp_path / "made-with-v1.png"
    Image.new("RGB", (4, 4)).save(image, pnginfo=sfumato.png_info(data))
    assert main(["run", str(image), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "value = 7.0" in captured.out
    assert "migrated from test.blend version 1 to 2" in captured.err


def test_two_migrations_of_the_same_step_are_reported_on_both_plugins():
    other = types.ModuleType("sfumato_other_versions")

    @sfumato.hookimpl
    def sfumato_migrations() -> list[Any]:
        return [sfumato.Migration("test.blend", 1, renamed={"amount": "size"})]

    other.sfumato_migrations = sfumato_migrations  # type: ignore[attr-defined]
    registry = sfumato.Registry.load(plugins=[test_plugin, versions_plugin, other])
    assert "two migrations of test.blend from version 1" in registry.plugins["sfumato_other_versions"].error


@sfumato.node("test.affine", version=2, category="test", output="value")
def affine(a: float, scale: float = 1.0) -> float:
    """Version 2 only scales; version 1 also added ``offset``, now a test.add node of its own."""
    return a * scale


split_plugin = types.ModuleType("sfumato_test_split")


@sfumato.hookimpl
def _split_node_types() -> list[Any]:
    return [affine]


def _split_affine(inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    own = {name: value for name, value in inputs.items() if name != "offset"}
    return {"": own, "offset": {"type": "test.add", "inputs": {"a": {"from": "@.value"}, "b": inputs.get("offset", 0.0)}}}


@sfumato.hookimpl
def _split_migrations() -> list[Any]:
    return [sfumato.Migration("test.affine", 1, split=_split_affine, moved_outputs={"value": "offset.value"})]


split_plugin.sfumato_node_types = _split_node_types  # type: ignore[attr-defined]
split_plugin.sfumato_migrations = _split_migrations  # type: ignore[attr-defined]

#: Written for test.affine version 1: 3 * 2 + 1, then + 0.5.
AFFINE_V1 = {
    "version": 1,
    "nodes": {"f": {"type": "test.affine", "version": 1, "inputs": {"a": 3.0, "scale": 2.0, "offset": 1.0}},
              "after": {"type": "test.add", "inputs": {"a": {"from": "f.value"}, "b": 0.5}}},
    "outputs": {"value": "after.value", "direct": "f.value"},
}


def test_node_split_in_two_by_a_migration_gives_the_same_outputs(tmp_path):
    registry = sfumato.Registry.load(plugins=[test_plugin, split_plugin])
    engine = sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out")
    result = engine.run(sfumato.Graph.from_dict(AFFINE_V1))
    assert result.outputs == {"value": 7.5, "direct": 7.0}
    [note] = sfumato.validate_graph(sfumato.Graph.from_dict(AFFINE_V1), registry, warnings=True)
    assert "split: new node 'f_offset' (test.add); output 'value' now comes from f_offset.value" in note.message
    upgraded = sfumato.upgrade_graph(sfumato.Graph.from_dict(AFFINE_V1), registry).graph.to_dict()
    assert upgraded["nodes"]["f_offset"]["inputs"] == {"a": {"from": "f.value"}, "b": 1.0}
    assert "offset" not in upgraded["nodes"]["f"]["inputs"]
    assert upgraded["nodes"]["after"]["inputs"]["a"] == {"from": "f_offset.value"}
    assert upgraded["outputs"] == {"value": "after.value", "direct": "f_offset.value"}
