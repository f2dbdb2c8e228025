"""Validation collects every problem, each with its node and JSON path."""

from __future__ import annotations

from typing import Annotated

import pytest

from sfumato import Graph, GraphValidationError, ParameterError, Port, plan_run, validate_graph


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

    with pytest.raises(ParameterError, match=r"'b' \(float\): 500.0 is above the maximum 100 of a.b \(test.add\)"):
        plan_run(graph, registry, {"b": 500})


def _feeding(params: dict, sites: int = 3) -> Graph:
    """A graph whose parameter ``b`` feeds input ``b`` (range -100..100) of ``sites`` test.add nodes."""
    nodes = {"n": {"type": "test.number"}}
    for index in range(sites):
        nodes[f"a{index}"] = {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": {"param": "b"}}}
    return Graph.from_dict({"version": 1, "params": {"b": {"type": "float", **params}}, "nodes": nodes})


def test_a_value_outside_an_input_range_is_reported_once_for_every_site_it_feeds(registry):
    with pytest.raises(ParameterError) as error:
        plan_run(_feeding({"default": 1.0}), registry, {"b": 500})
    assert str(error.value) == "parameter 'b' (float): 500.0 is above the maximum 100 of a0.b (test.add)"


def test_a_value_outside_the_declared_or_the_input_range_is_told_in_the_same_words(registry):
    graph = _feeding({"default": 1.0, "minimum": -1000, "maximum": 1000})
    with pytest.raises(ParameterError) as declared:
        plan_run(graph, registry, {"b": 2000})
    with pytest.raises(ParameterError) as narrowed:
        plan_run(graph, registry, {"b": 500})
    assert str(declared.value) == "parameter 'b' (float): 2000.0 is above the maximum 1000"
    assert str(narrowed.value) == "parameter 'b' (float): 500.0 is above the maximum 100 of a0.b (test.add)"


def test_a_declared_range_wider_than_an_input_range_is_one_warning_per_bound(registry):
    graph = _feeding({"default": 1.0, "minimum": -1000, "maximum": 1000})
    assert validate_graph(graph, registry) == []
    found = validate_graph(graph, registry, warnings=True)
    assert [(w.path, w.severity) for w in found] == [("params.b.minimum", "warning"), ("params.b.maximum", "warning")]
    assert "a0.b (test.add), which takes at most 100" in found[1].message


def test_a_declared_range_that_no_input_value_fits_is_one_error(registry):
    [issue] = issues_of(registry, {"params": {"b": {"type": "float", "minimum": 200, "required": True}},
                                   "nodes": {"n": {"type": "test.number"}, **{
                                       f"a{i}": {"type": "test.add", "inputs": {"a": {"from": "n.value"},
                                                                               "b": {"param": "b"}}}
                                       for i in range(3)}}})
    assert issue.path == "params.b" and "no value fits" in issue.message and "minimum 200" in issue.message


def test_a_default_outside_an_input_range_is_one_issue_at_the_declaration(registry):
    [issue] = validate_graph(_feeding({"default": 500.0}), registry)
    assert issue.path == "params.b.default"
    assert issue.message == "default 500.0 is invalid: 500.0 is above the maximum 100 of a0.b (test.add)"


def test_a_default_outside_its_own_range_is_reported_once(registry):
    [issue] = validate_graph(_feeding({"default": 500.0, "maximum": 50}), registry)
    assert issue.path == "params.b.default" and "above the maximum 50" in issue.message


# -- bad input never escapes as anything but a SfumatoError (issue 13, item 9) ---------------


def test_integer_too_large_for_a_float_is_refused_naming_node_and_field(registry):
    with pytest.raises(GraphValidationError) as error:
        Graph.from_dict({"version": 1, "nodes": {"a": {"type": "test.add", "inputs": {"a": 10**400}}}})
    [issue] = error.value.issues
    assert issue.node == "a" and issue.path == "nodes.a.inputs.a" and "64 bits" in issue.message


def test_minimum_on_a_text_parameter_is_a_declaration_issue(registry):
    issues = issues_of(registry, {"params": {"p": {"type": "str", "default": "x", "minimum": 1}}, "nodes": {}})
    assert [(i.path, "numbers only" in i.message) for i in issues] == [("params.p", True)]


def test_bounds_on_a_list_parameter_apply_to_each_number(registry):
    graph = Graph.from_dict({"version": 1, "params": {"v": {"type": "list[int]", "default": [1], "maximum": 5}},
                             "nodes": {}})
    with pytest.raises(ParameterError, match="9 is above the maximum 5"):
        plan_run(graph, registry, {"v": [1, 9]})


def test_lone_surrogate_in_a_literal_is_refused_before_the_run(registry):
    with pytest.raises(GraphValidationError) as error:
        Graph.from_dict({"version": 1, "nodes": {"t": {"type": "text.value", "inputs": {"text": "a\ud800"}}}})
    [issue] = error.value.issues
    assert issue.node == "t" and issue.path == "nodes.t.inputs.text" and "surrogate" in issue.message


def test_lone_surrogate_in_a_set_value_is_a_parameter_error(registry):
    graph = Graph.from_dict({"version": 1, "params": {"p": {"type": "str", "default": "x"}}, "nodes": {}})
    with pytest.raises(ParameterError, match="'p'.*surrogate"):
        plan_run(graph, registry, {"p": "\udcff"}, params_from_text=True)


def test_nan_and_infinity_are_no_float_values(registry):
    graph = Graph.from_dict({"version": 1, "params": {"p": {"type": "float", "default": 1.0}}, "nodes": {}})
    for text in ("NaN", "Infinity", "1e999"):
        with pytest.raises(ParameterError, match="not a finite number"):
            plan_run(graph, registry, {"p": text}, params_from_text=True)


def test_meta_nested_deeper_than_the_limit_is_refused_with_its_path(registry):
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(GraphValidationError) as error:
        Graph.from_dict({"version": 1, "nodes": {"a": {"type": "test.number", "meta": {"layout": deep}}}})
    [issue] = error.value.issues
    assert issue.node == "a" and issue.path.startswith("nodes.a.meta.layout[0]") and "nested" in issue.message


def test_parameter_default_nested_deeper_than_the_limit_is_refused(registry):
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(GraphValidationError, match=r"params\.p\.default.*nested more than 64"):
        Graph.from_dict({"version": 1, "params": {"p": {"type": "json", "default": deep}}, "nodes": {}})


def test_a_port_conversion_that_raises_is_a_validation_issue(registry):
    import types as pytypes

    import sfumato
    from sfumato import PortType, node

    def to_kelvin(value: float) -> float:
        if value < -273.15:
            raise ArithmeticError("below absolute zero")
        return value + 273.15

    @node("test.kelvin", output="value")
    def kelvin(t: Annotated[float, Port("Kelvin")]) -> float:
        return t

    plugin = pytypes.ModuleType("sfumato_kelvin")
    plugin.sfumato_port_types = sfumato.hookimpl(lambda: [PortType("Kelvin", float, literal=True)])
    plugin.sfumato_port_conversions = sfumato.hookimpl(lambda: [("Float", "Kelvin", to_kelvin)])
    plugin.sfumato_node_types = sfumato.hookimpl(lambda: [kelvin])
    kelvin_registry = sfumato.Registry.load(plugins=[plugin])
    [issue] = validate_graph(Graph.from_dict({"version": 1, "nodes": {
        "k": {"type": "test.kelvin", "inputs": {"t": -300.0}}}}), kelvin_registry)
    assert issue.node == "k" and issue.path == "nodes.k.inputs.t"
    assert "ArithmeticError: below absolute zero" in issue.message


# -- collect everything (issue 12, item 9) ------------------------------------------------------


def test_a_bad_parameter_type_does_not_hide_the_other_problems(registry):
    issues = issues_of(registry, {"params": {"p": {"type": "integer", "default": 1}},
                                  "nodes": {"a": {"type": "nope.nope"},
                                            "b": {"type": "test.add", "inputs": {"a": {"param": "p"}}}}})
    assert {i.path for i in issues} == {"params.p.type", "nodes.a.type"}


def test_a_malformed_node_entry_does_not_hide_the_other_problems(registry):
    issues = issues_of(registry, {"nodes": {"a": {"type": "test.number", "input": {"value": 1}},
                                            "b": {"type": "test.add", "inputs": {"a": {"from": "zz.value"}}}}})
    assert {i.path for i in issues} == {"nodes.a.input", "nodes.b.inputs.a"}


def test_a_bad_set_value_does_not_hide_the_graph_problems(registry):
    graph = Graph.from_dict({"version": 1, "params": {"v": {"type": "int", "default": 1}},
                             "nodes": {"a": {"type": "test.add", "inputs": {"a": {"from": "zz.value"}}}}})
    with pytest.raises(GraphValidationError) as error:
        plan_run(graph, registry, {"v": "seven"}, params_from_text=True)
    assert {i.path for i in error.value.issues} == {"params.v", "nodes.a.inputs.a"}


def test_unknown_model_name_is_a_validation_issue_with_did_you_mean(registry):
    [issue] = issues_of(registry, {"nodes": {"e": {"type": "encode.sentence",
                                                   "inputs": {"texts": ["a"], "model": "all-MiniLM-L6-v3"}}}})
    assert issue.node == "e" and issue.path == "nodes.e.inputs.model"
    assert "not found" in issue.message and "did you mean 'all-MiniLM-L6-v2'" in issue.message


def test_model_name_for_a_user_without_a_home_is_an_issue_not_a_crash(registry):
    issues = issues_of(registry, {"nodes": {"e": {"type": "encode.sentence",
                                                  "inputs": {"texts": ["a"], "model": "~no-such-user-zq/x"}}}})
    assert "nodes.e.inputs.model" in paths(issues)


# -- "did you mean" at scale (issue 13, item 4) -------------------------------------------------


def test_did_you_mean_among_thousands_finds_a_typo_at_either_end():
    from sfumato.run.planning import Suggestions

    names = Suggestions([f"node_{i}" for i in range(5000)])
    assert names.closest("nodes_1234") == "node_1234"
    assert names.closest("mode_4321") == "node_4321"
    assert names.closest("node_4321x") == "node_4321"


def test_many_dangling_links_each_get_a_suggestion(registry):
    nodes = {f"node_{i}": {"type": "test.add", "inputs": {"a": {"from": f"nodes_{i}.value"}}} for i in range(2000)}
    issues = issues_of(registry, {"nodes": nodes})
    assert len(issues) == 2000
    assert all(f"did you mean 'node_{issue.node.split('_')[1]}'" in issue.message for issue in issues)


def test_run_seed_beyond_64_bits_is_a_parameter_error(registry):
    graph = Graph.from_dict({"version": 1, "nodes": {"a": {"type": "test.number"}}})
    with pytest.raises(ParameterError, match="the run seed must be an integer from 0 to 2\\*\\*64 - 1"):
        plan_run(graph, registry, seed=2**70)


def test_did_you_mean_compares_each_dangling_link_with_few_names(registry, monkeypatch):
    import difflib

    compared: list[int] = []
    real = difflib.get_close_matches

    def counting(word, possibilities, *args, **kwargs):
        possibilities = list(possibilities)
        compared.append(len(possibilities))
        return real(word, possibilities, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    nodes = {f"node_{i}": {"type": "test.add", "inputs": {"a": {"from": f"nodes_{i}.value"}}} for i in range(2000)}
    issues_of(registry, {"nodes": nodes})
    # Every node against every link is 4,000,000 comparisons (38 s measured); a few dozen per link stays linear.
    assert sum(compared) < 2000 * 100
