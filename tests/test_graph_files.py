"""Graph files: parsing, structure errors, the builder round trip, the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfumato import Graph, GraphBuilder, GraphValidationError, graph_json_schema
from sfumato.graph.document import Link, ParamRef, Value, parse_graph_text

REPO = Path(__file__).resolve().parents[1]


def test_inputs_parse_as_links_params_and_literals():
    graph = Graph.from_dict({"version": 1, "params": {"p": {"type": "str", "default": "x"}}, "nodes": {
        "a": {"type": "test.number", "inputs": {"value": 2}},
        "b": {"type": "test.add", "inputs": {"a": {"from": "a.value"}, "b": {"param": "p"}}},
        "c": {"type": "x.y", "inputs": {"d": {"value": {"from": "not a link"}}}},
    }})
    assert graph.inputs["a"]["value"] == Value(2)
    assert graph.inputs["b"]["a"] == Link("a", "value")
    assert graph.inputs["b"]["b"] == ParamRef("p")
    assert graph.inputs["c"]["d"] == Value({"from": "not a link"})


def test_repeated_node_id_is_rejected_not_merged():
    text = '{"version": 1, "nodes": {"a": {"type": "t.x"}, "a": {"type": "t.y"}}}'
    with pytest.raises(GraphValidationError) as error:
        parse_graph_text(text)
    assert "'a' appears twice" in str(error.value)


def test_unparseable_json_reports_line_and_column():
    with pytest.raises(GraphValidationError) as error:
        parse_graph_text('{"version": 1,\n "nodes": {,}}')
    assert error.value.issues[0].path == "line 2, column 12"


def test_unknown_format_version_is_named():
    with pytest.raises(GraphValidationError, match="version 7 is not supported"):
        Graph.from_dict({"version": 7, "nodes": {}})


def test_unknown_top_level_key_is_reported():
    with pytest.raises(GraphValidationError) as error:
        Graph.from_dict({"version": 1, "nodes": {}, "nodez": {}})
    assert error.value.issues[0].path == "nodez"


def test_builder_round_trips_through_json(tmp_path):
    builder = GraphBuilder("demo", "a demo")
    prompt = builder.param("prompt", "str", default="a red circle", description="what to draw")
    clean = builder.add("text.normalize", "clean", text=prompt, lowercase=True)
    builder.add("text.template", "fill", template="{subject}!", subject=clean["text"],
                values={"from": "a literal dict"})
    builder.output("text", clean["text"])
    graph = builder.build()
    path = graph.save(tmp_path / "demo.json")
    loaded = Graph.load(path)
    assert loaded.to_dict() == graph.to_dict() == json.loads(path.read_text())
    assert loaded.inputs["fill"]["values"] == Value({"from": "a literal dict"})
    assert loaded.document.outputs == {"text": "clean.text"}


def test_every_shipped_graph_parses():
    for path in sorted((REPO / "graphs").glob("*.json")):
        Graph.load(path)


def test_schema_describes_nodes_and_params():
    schema = graph_json_schema()
    assert schema["title"] == "sfumato graph"
    assert "nodes" in schema["properties"] and "params" in schema["properties"]


def test_builder_passes_an_input_named_title_to_the_node():
    builder = GraphBuilder("t")
    card = builder.add("image.text_card", "card", text="x")
    builder.add("image.grid", "grid", images=card["images"], title="contact sheet", node_title="The grid")
    document = builder.to_dict()["nodes"]["grid"]
    assert document["inputs"]["title"] == "contact sheet" and document["title"] == "The grid"


# -- untrusted text (issues 12.9 and 13.9) ---------------------------------------------------


def test_empty_file_is_named_as_empty(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("  \n")
    with pytest.raises(GraphValidationError) as error:
        Graph.load(path)
    assert "the graph file is empty" in error.value.issues[0].message


def test_trailing_comma_is_named_with_its_position():
    with pytest.raises(GraphValidationError) as error:
        parse_graph_text('{"version": 1,\n "nodes": {\n  "a": {"type": "text.value"},\n }\n}')
    [issue] = error.value.issues
    assert issue.path == "line 3, column 30" and "trailing comma" in issue.message


def test_folder_given_as_the_graph_path_is_named_as_a_folder(tmp_path):
    (tmp_path / "one.json").write_text("{}")
    with pytest.raises(GraphValidationError) as error:
        Graph.load(tmp_path)
    assert "is a folder, not a graph file (graph files in it: one.json)" in error.value.issues[0].message


def test_json_nested_a_thousand_deep_is_a_validation_error():
    with pytest.raises(GraphValidationError, match="nested too deeply"):
        parse_graph_text('{"version": 1, "nodes": {"a": {"type": "t.x", "inputs": {"v": '
                         + "[" * 1000 + "]" * 1000 + "}}}}")


def test_integer_over_4300_digits_is_named_with_its_line():
    with pytest.raises(GraphValidationError) as error:
        parse_graph_text('{"version": 1,\n "nodes": {"a": {"type": "t.x", "inputs": {"v": ' + "7" * 5000 + "}}}}")
    [issue] = error.value.issues
    assert issue.path.startswith("line 2,") and "5000 digits" in issue.message


def test_graph_that_is_not_an_object_says_what_it_is():
    with pytest.raises(GraphValidationError, match="a graph is a JSON object .* not a list"):
        parse_graph_text("[1, 2]")


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"version": 1, "nodes": {}}')
    assert Graph.load(path).nodes == {}


def test_node_id_longer_than_256_characters_is_refused_with_a_short_path():
    with pytest.raises(GraphValidationError) as error:
        Graph.from_dict({"version": 1, "nodes": {"n" * 100_000: {"type": "text.value"}}})
    [issue] = error.value.issues
    assert "a key of 100,000 characters" in issue.message and len(str(issue)) < 300
