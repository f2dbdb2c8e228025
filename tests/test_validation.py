"""Validation collects every problem, each with its node and JSON path."""

from __future__ import annotations

import pytest

from sfumato import Graph, ParameterError, plan_run, validate_graph


def issues_of(registry, document):
    return validate_graph(Graph.from_dict({"version": 1, **document}), registry)


def paths(issues):
    return {issue.path for issue in issues}


def test_valid_graph_has_no_issues(registry):
    assert issues_of(registry, {"nodes": {"a": {"type": "test.number", "inputs": {"value": 3}}}}) == []


def test_unknown_node_type_suggests_the_nearest_names(registry):
    [issue] = issues_of(registry, {"nodes": {"a": {"type": "text.normalise"}}})
    assert issue.node == "a" and issue.path == "nodes.a.type"
    assert "did you mean 'text.normalize'" in issue.message


def test_unknown_input_lists_the_inputs(registry):
    [issue] = issues_of(registry, {"nodes": {"a": {"type": "test.number", "inputs": {"valeu": 1}}}})
    assert issue.path == "nodes.a.inputs.valeu"
    assert "did you mean 'value'" in issue.message and "value (Float)" in issue.message


def test_missing_required_input(registry):
    [issue] = issues_of(registry, {"nodes": {"a": {"type": "test.add", "inputs": {}}}})
    assert "missing required input 'a'" in issue.message and issue.node == "a"


def test_literal_out_of_range_names_field_and_value(registry):
    [issue] = issues_of(registry, {"nodes": {
        "n": {"type": "test.number"},
        "a": {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": 1000}}}})
    assert issue.path == "nodes.a.inputs.b"
    assert "1000" in issue.message and "less than or equal to 100" in issue.message


def test_link_to_missing_node_and_missing_output(registry):
    issues = issues_of(registry, {"nodes": {
        "n": {"type": "test.number"},
        "a": {"type": "test.add", "inputs": {"a": {"from": "m.value"}}},
        "b": {"type": "test.add", "inputs": {"a": {"from": "n.valu"}}}}})
    messages = " | ".join(i.message for i in issues)
    assert "node 'm', which is not in the graph" in messages
    assert "has no output 'valu'" in messages and "did you mean 'value'" in messages


def test_type_mismatch_on_a_link(registry):
    [issue] = issues_of(registry, {"nodes": {
        "t": {"type": "text.value", "inputs": {"text": "hi"}},
        "a": {"type": "test.add", "inputs": {"a": {"from": "t.text"}}}}})
    assert "type mismatch" in issue.message and "Text" in issue.message and "Float" in issue.message


def test_int_output_may_feed_a_float_input(registry):
    assert issues_of(registry, {"nodes": {
        "s": {"type": "test.stats", "inputs": {"values": ["a"]}},
        "a": {"type": "test.add", "inputs": {"a": {"from": "s.count"}}}}}) == []


def test_non_literal_port_given_a_literal(registry):
    [issue] = issues_of(registry, {"nodes": {"s": {"type": "image.sharpen", "inputs": {"images": "x.png"}}}})
    assert "cannot be written as a literal" in issue.message


def test_cycle_names_its_nodes(registry):
    issues = issues_of(registry, {"nodes": {
        "a": {"type": "test.add", "inputs": {"a": {"from": "b.value"}}},
        "b": {"type": "test.add", "inputs": {"a": {"from": "a.value"}}}}})
    assert any("cycle between nodes 'a', 'b'" in i.message for i in issues)


def test_unknown_and_ill_typed_graph_parameters(registry):
    issues = issues_of(registry, {
        "params": {"p": {"type": "int", "default": "seven"}, "t": {"type": "str", "default": "x"}},
        "nodes": {"a": {"type": "test.number", "inputs": {"value": {"param": "q"}}},
                  "b": {"type": "test.add", "inputs": {"a": {"param": "t"}}}}})
    messages = " | ".join(i.message for i in issues)
    assert "params.p.default" in paths(issues)
    assert "parameter 'q', which is not declared" in messages
    assert "parameter 't' is str" in messages


def test_every_problem_is_reported_at_once(registry):
    issues = issues_of(registry, {"nodes": {
        "a": {"type": "nope.nope"},
        "b": {"type": "test.add", "inputs": {"x": 1}},
        "c": {"type": "test.add", "inputs": {"a": {"from": "zz.value"}}}}})
    assert len(issues) >= 4


def test_set_values_are_parsed_and_validated(registry):
    graph = Graph.from_dict({"version": 1, "params": {"v": {"type": "float", "default": 1.0, "maximum": 10}},
                             "nodes": {"a": {"type": "test.number", "inputs": {"value": {"param": "v"}}}}})
    plan = plan_run(graph, registry, {"v": "2.5"}, params_from_text=True)
    assert plan.nodes["a"].literals["value"] == 2.5
    with pytest.raises(ParameterError, match="above the maximum"):
        plan_run(graph, registry, {"v": "11"}, params_from_text=True)
    with pytest.raises(ParameterError, match="unknown parameter 'w'"):
        plan_run(graph, registry, {"w": "1"}, params_from_text=True)
    with pytest.raises(ParameterError, match="'v'"):
        plan_run(graph, registry, {"v": "abc"}, params_from_text=True)


def test_parameter_value_checked_against_the_input_it_feeds(registry):
    graph = Graph.from_dict({"version": 1, "params": {"b": {"type": "float", "default": 1.0}}, "nodes": {
        "n": {"type": "test.number"},
        "a": {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": {"param": "b"}}}}})
    from sfumato import GraphValidationError

    with pytest.raises(GraphValidationError, match="parameter 'b' = 500"):
        plan_run(graph, registry, {"b": 500})
