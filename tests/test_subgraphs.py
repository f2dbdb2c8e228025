"""Subgraphs: a graph file (or a plugin's graph type) used as a node type."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import CALLS, test_plugin

import sfumato
from sfumato.cli.main import main


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"version": 1, **document}))
    return path


#: A subgraph with two independent branches: x + 10 and y + 100.
PLUS = {
    "name": "plus",
    "description": "Adds ten to x and a hundred to y.",
    "params": {"x": {"type": "float", "default": 1.0}, "y": {"type": "float", "default": 2.0}},
    "nodes": {
        "tens": {"type": "test.add", "inputs": {"a": {"param": "x"}, "b": 10}},
        "hundreds": {"type": "test.add", "inputs": {"a": {"param": "y"}, "b": 100}},
    },
    "outputs": {"tens": "tens.value", "hundreds": "hundreds.value"},
}


def outer(type_name: str = "graph:plus.json", **inputs: Any) -> dict[str, Any]:
    return {
        "params": {"start": {"type": "float", "default": 5.0}},
        "nodes": {
            "n": {"type": "test.number", "inputs": {"value": {"param": "start"}}},
            "sub": {"type": type_name, "inputs": {"x": {"from": "n.value"}, **inputs}},
            "total": {"type": "test.add", "inputs": {"a": {"from": "sub.tens"}, "b": {"from": "sub.hundreds"}}},
        },
        "outputs": {"total": "total.value", "tens": "sub.tens"},
    }


@pytest.fixture
def graphs(tmp_path: Path) -> Path:
    write(tmp_path / "plus.json", PLUS)
    return tmp_path


def test_graph_file_used_as_node_takes_params_as_inputs_and_gives_its_outputs(engine, graphs):
    graph = sfumato.Graph.load(write(graphs / "outer.json", outer()))
    result = engine.run(graph)
    assert result.outputs == {"total": (5 + 10) + (2 + 100), "tens": 15.0}
    # Inner nodes run, and are reported, under the subgraph node's id.
    assert result.report.nodes["sub/tens"].status == sfumato.NodeStatus.RAN
    assert "sub" not in result.report.nodes


def test_unset_subgraph_param_takes_its_default_and_literal_inputs_are_checked(engine, graphs):
    graph = sfumato.Graph.load(write(graphs / "outer.json", outer(y=0.5)))
    assert engine.run(graph).outputs["total"] == 15 + 100.5
    bad = sfumato.Graph.load(write(graphs / "bad.json", outer(y="many")))
    issues = sfumato.validate_graph(bad, engine.registry)
    assert [issue.path for issue in issues] == ["nodes.sub.inputs.y"]
    assert "parameter 'y' of subgraph 'graph:plus.json'" in issues[0].message


def test_wrong_link_into_subgraph_is_reported_with_outer_and_inner_path(registry, graphs):
    write(graphs / "stats.json", {
        "inputs": {"values": {"type": "TextList"}},
        "nodes": {"count": {"type": "test.add", "inputs": {"a": {"input": "values"}}}},
        "outputs": {"count": "count.value"},
    })
    graph = sfumato.Graph.load(write(graphs / "outer.json", {
        "nodes": {"words": {"type": "test.stats", "inputs": {"values": ["a", "b"]}},
                  "sub": {"type": "graph:stats.json", "inputs": {"values": {"from": "words.count"}}}},
        "outputs": {"count": "sub.count"},
    }))
    sfumato.validate_graph(graph, registry)  # Int feeds Float: valid
    graph = sfumato.Graph.load(write(graphs / "outer.json", {
        "nodes": {"words": {"type": "test.stats", "inputs": {"values": ["a", "b"]}},
                  "names": {"type": "test.number"},
                  "sub": {"type": "graph:stats.json", "inputs": {"values": {"from": "words.total"}}},
                  "use": {"type": "test.add", "inputs": {"a": {"from": "sub.count"}, "b": {"from": "names.value"}}}},
        "outputs": {"count": "use.value"},
    }))
    write(graphs / "stats.json", {
        "inputs": {"values": {"type": "TextList"}},
        "nodes": {"stats": {"type": "test.stats", "inputs": {"values": {"input": "values"}}}},
        "outputs": {"count": "stats.count"},
    })
    issues = sfumato.validate_graph(graph, registry)
    assert len(issues) == 1
    assert issues[0].path == "nodes.sub.inputs.values"
    assert issues[0].node == "sub"
    assert "type mismatch" in issues[0].message
    assert "inside subgraph 'sub' (graph:stats.json): nodes.stats.inputs.values" in issues[0].message


def test_problem_inside_a_subgraph_file_names_the_inner_node_by_its_full_path(registry, graphs):
    broken = dict(PLUS, nodes={**PLUS["nodes"], "tens": {"type": "test.addd", "inputs": {"a": {"param": "x"}}}})
    write(graphs / "plus.json", broken)
    issues = sfumato.validate_graph(sfumato.Graph.load(write(graphs / "outer.json", outer())), registry)
    assert [(issue.path, issue.node) for issue in issues] == [("nodes.sub/tens.type", "sub/tens")]
    assert "did you mean 'test.add'" in issues[0].message


def test_subgraph_node_with_an_input_the_graph_does_not_declare_is_reported(registry, graphs):
    graph = sfumato.Graph.load(write(graphs / "outer.json", outer(z=1.0)))
    issues = sfumato.validate_graph(graph, registry)
    assert [issue.path for issue in issues] == ["nodes.sub.inputs.z"]
    assert "has no input 'z' (inputs: x, y)" in issues[0].message


def test_link_to_an_output_the_subgraph_does_not_declare_is_reported(registry, graphs):
    document = outer()
    document["outputs"]["missing"] = "sub.thousands"
    issues = sfumato.validate_graph(sfumato.Graph.load(write(graphs / "outer.json", document)), registry)
    assert [issue.path for issue in issues] == ["outputs.missing"]
    assert "has no output 'thousands' (outputs: hundreds, tens)" in issues[0].message


def test_nested_subgraphs_run(engine, graphs):
    write(graphs / "twice.json", {
        "params": {"x": {"type": "float", "default": 0.0}},
        "nodes": {"first": {"type": "graph:plus.json", "inputs": {"x": {"param": "x"}}},
                  "second": {"type": "graph:plus.json", "inputs": {"x": {"from": "first.tens"}}}},
        "outputs": {"value": "second.tens"},
    })
    graph = sfumato.Graph.load(write(graphs / "outer.json", {
        "nodes": {"top": {"type": "graph:twice.json", "inputs": {"x": 1.0}}},
        "outputs": {"value": "top.value"},
    }))
    result = engine.run(graph)
    assert result.outputs == {"value": 21.0}
    assert result.report.nodes["top/second/tens"].status == sfumato.NodeStatus.RAN


def test_graph_including_itself_is_refused(registry, graphs):
    graph = sfumato.Graph.load(write(graphs / "loop.json", {
        "nodes": {"again": {"type": "graph:loop.json"}}, "outputs": {}}))
    issues = sfumato.validate_graph(graph, registry)
    assert [issue.path for issue in issues] == ["nodes.again.type"]
    assert "includes itself: loop.json -> loop.json" in issues[0].message


def test_graph_including_itself_through_another_is_refused(registry, graphs):
    write(graphs / "a.json", {"nodes": {"b": {"type": "graph:b.json"}}})
    write(graphs / "b.json", {"nodes": {"a": {"type": "graph:a.json"}}})
    issues = sfumato.validate_graph(sfumato.Graph.load(graphs / "a.json"), registry)
    assert [issue.path for issue in issues] == ["nodes.b/a.type"]
    assert "includes itself: a.json -> b.json -> a.json" in issues[0].message


def test_subgraph_file_outside_the_including_graphs_folder_is_refused(registry, graphs):
    graph = sfumato.Graph.load(write(graphs / "outer.json", outer("graph:../plus.json")))
    issues = sfumato.validate_graph(graph, registry)
    assert issues[0].path == "nodes.sub.type"
    assert "relative to the including graph" in issues[0].message


def test_changing_one_subgraph_input_reruns_only_what_depends_on_it(engine, graphs):
    graph = sfumato.Graph.load(write(graphs / "outer.json", outer()))
    engine.run(graph)
    CALLS.clear()
    result = engine.run(graph, {"start": 7.0})
    # x changed: 'tens' and 'total' re-run; 'hundreds' (fed by y only) comes from the cache.
    assert CALLS["test.add"] == 2
    assert result.report.nodes["sub/hundreds"].status == sfumato.NodeStatus.CACHED
    assert result.report.nodes["sub/tens"].status == sfumato.NodeStatus.RAN


def graph_type_plugin(path: Path) -> types.ModuleType:
    plugin = types.ModuleType("sfumato_test_graph_types")

    @sfumato.hookimpl
    def sfumato_graph_types() -> list[Any]:
        return [sfumato.GraphType("test.plus", path)]

    plugin.sfumato_graph_types = sfumato_graph_types  # type: ignore[attr-defined]
    return plugin


def test_plugin_ships_a_graph_as_a_node_type_with_typed_inputs_and_outputs(graphs, tmp_path):
    registry = sfumato.Registry.load(plugins=[test_plugin, graph_type_plugin(graphs / "plus.json")])
    spec = registry.nodes["test.plus"]
    assert spec.description.startswith("Adds ten to x and a hundred to y.")
    assert {name: (item.port, item.default) for name, item in spec.inputs.items()} == {
        "x": ("Float", 1.0), "y": ("Float", 2.0)}
    assert {name: item.port for name, item in spec.outputs.items()} == {"tens": "Float", "hundreds": "Float"}
    engine = sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out")
    graph = sfumato.Graph.from_dict({"version": 1, **outer("test.plus")})
    assert engine.run(graph).outputs["total"] == 117.0


def test_sfumato_nodes_lists_graph_types_with_their_docs(graphs, monkeypatch, capsys):
    registry = sfumato.Registry.load(plugins=[test_plugin, graph_type_plugin(graphs / "plus.json")])
    monkeypatch.setattr("sfumato.registry._default", registry)
    assert main(["nodes", "show", "test.plus"]) == 0
    shown = capsys.readouterr().out
    assert "Adds ten to x and a hundred to y." in shown
    assert "tens" in shown and "hundreds" in shown


def test_graph_type_with_the_id_of_a_node_type_is_reported(graphs):
    plugin = types.ModuleType("clashing")

    @sfumato.hookimpl
    def sfumato_graph_types() -> list[Any]:
        return [sfumato.GraphType("test.add", graphs / "plus.json")]

    plugin.sfumato_graph_types = sfumato_graph_types  # type: ignore[attr-defined]
    registry = sfumato.Registry.load(plugins=[test_plugin, plugin])
    assert registry.nodes["test.add"].category == "test"
    assert "has the id of a node type of plugin 'sfumato_test_nodes'" in registry.plugins["clashing"].error


def test_node_id_meeting_an_inner_nodes_id_is_refused(registry, graphs):
    document = outer()
    document["nodes"]["sub/tens"] = {"type": "test.number"}
    issues = sfumato.validate_graph(sfumato.Graph.load(write(graphs / "outer.json", document)), registry)
    assert [issue.path for issue in issues] == ["nodes.sub/tens"]
    assert "also the id of a subgraph's inner node" in issues[0].message


@pytest.mark.slow
def test_image_from_a_graph_with_a_subgraph_reruns_without_the_subgraph_file(tmp_path, capsys):
    subgraph = json.loads(sfumato.resolve_graph_path("make-images").read_text())
    write(tmp_path / "mine.json", subgraph)
    path = write(tmp_path / "outer.json", {
        "nodes": {"make": {"type": "graph:mine.json", "inputs": {"steps": 2, "batch_size": 1}},
                  "save": {"type": "image.save", "inputs": {"images": {"from": "make.images"}}}}})
    assert main(["run", str(path), "--out", str(tmp_path / "first"), "--device", "cpu"]) == 0
    (tmp_path / "mine.json").unlink()
    [image] = (tmp_path / "first").glob("*.png")
    capsys.readouterr()
    assert main(["run", str(image), "--out", str(tmp_path / "again"), "--device", "cpu"]) == 0
    assert "make/generate" in capsys.readouterr().err


def test_graph_input_used_outside_a_subgraph_is_reported(registry):
    graph = sfumato.Graph.from_dict({"version": 1, "inputs": {"v": {"type": "Float"}},
                                     "nodes": {"a": {"type": "test.add", "inputs": {"a": {"input": "v"}}}}})
    issues = sfumato.validate_graph(graph, registry)
    assert [issue.path for issue in issues] == ["nodes.a.inputs.a"]
    assert "only an outer graph sets" in issues[0].message


def test_draw_shows_a_subgraph_collapsed_and_expanded_with_expand(graphs, capsys):
    path = write(graphs / "outer.json", outer())
    assert main(["draw", str(path)]) == 0
    collapsed = capsys.readouterr().out
    assert "graph:plus.json" in collapsed and "sub/tens" not in collapsed
    assert main(["draw", str(path), "--expand"]) == 0
    expanded = capsys.readouterr().out
    assert "sub/tens" in expanded and "sub/hundreds" in expanded and "graph:plus.json" not in expanded


def test_subgraphs_multiplying_past_the_node_limit_are_refused(registry, graphs, monkeypatch):
    monkeypatch.setattr("sfumato.graph.subgraph.MAX_EXPANDED_NODES", 100)
    write(graphs / "level0.json", {"nodes": {"n": {"type": "test.number"}}, "outputs": {"v": "n.value"}})
    for level in range(1, 8):  # each level holds the one below twice: 2**7 = 128 nodes in all
        write(graphs / f"level{level}.json", {
            "nodes": {"a": {"type": f"graph:level{level - 1}.json"}, "b": {"type": f"graph:level{level - 1}.json"}},
            "outputs": {"v": "a.v"}})
    issues = sfumato.validate_graph(sfumato.Graph.load(graphs / "level7.json"), registry)
    assert issues and all("larger than 100 nodes" in issue.message for issue in issues)
