"""Lazy branches: flow.if and flow.switch run only the branch they take."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import CALLS

import sfumato


def if_graph(condition: Any, *, false_value: Any = None) -> sfumato.Graph:
    """flow.if between two counting branches: 'yes' (test.add, 1 + 10) and 'no' (test.scale, 1 * 3)."""
    nodes: dict[str, Any] = {
        "n": {"type": "test.number", "inputs": {"value": 1.0}},
        "yes": {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": 10.0}},
        "no": {"type": "test.scale", "inputs": {"a": {"from": "n.value"}, "factor": 3.0}},
        "pick": {"type": "flow.if", "inputs": {"condition": condition, "if_true": {"from": "yes.value"},
                                               "if_false": {"from": "no.value"} if false_value is None
                                               else false_value}},
        "after": {"type": "test.add", "inputs": {"a": {"from": "pick.value"}, "b": 0.5}},
    }
    return sfumato.Graph.from_dict({"version": 1, "params": {"go": {"type": "bool", "default": True}},
                                    "nodes": nodes, "outputs": {"value": "after.value"}})


def test_untaken_branch_of_flow_if_never_runs(engine):
    result = engine.run(if_graph({"param": "go"}))
    assert result.outputs == {"value": 11.5}
    assert CALLS["test.scale"] == 0
    assert CALLS["test.add"] == 2  # 'yes' and 'after'
    CALLS.clear()
    result = engine.run(if_graph({"param": "go"}), {"go": False})
    assert result.outputs == {"value": 3.5}
    assert CALLS["test.scale"] == 1 and CALLS["test.add"] == 1  # 'no' and 'after' ('yes' was not needed)


def test_run_report_shows_the_skipped_branch(engine):
    report = engine.run(if_graph(False)).report
    assert report.nodes["yes"].status == sfumato.NodeStatus.SKIPPED
    assert report.nodes["yes"].reason == "untaken branch: input 'if_true' of 'pick' (flow.if) was not needed"
    assert report.nodes["no"].status == sfumato.NodeStatus.RAN


def test_condition_computed_by_a_node_decides_the_branch(engine):
    graph = if_graph({"from": "check.result"})
    graph = sfumato.Graph.from_dict({**graph.to_dict(), "nodes": {
        **graph.to_dict()["nodes"],
        "check": {"type": "flow.compare", "inputs": {"a": {"from": "n.value"}, "b": 5.0, "op": ">"}}}})
    assert engine.run(graph).outputs == {"value": 3.5}
    assert CALLS["test.add"] == 1


def test_branch_shared_with_a_taken_path_still_runs_once(engine):
    document = if_graph(True).to_dict()
    document["nodes"]["also"] = {"type": "test.record", "inputs": {"a": {"from": "no.value"}}}
    result = engine.run(sfumato.Graph.from_dict(document))
    assert result.outputs == {"value": 11.5}
    assert CALLS["test.scale"] == 1  # 'no' feeds an output node too


def test_flow_if_branches_of_different_types_are_refused_at_validation(registry):
    document = if_graph(True).to_dict()
    document["nodes"]["words"] = {"type": "test.stats", "inputs": {"values": ["a"]}}
    document["nodes"]["pick"]["inputs"]["if_false"] = {"from": "words.count"}
    document["nodes"]["text"] = {"type": "test.stats", "inputs": {"values": ["a"]}}
    assert sfumato.validate_graph(sfumato.Graph.from_dict(document), registry) == []  # Int and Float agree
    document["params"]["words"] = {"type": "str", "default": "some text"}
    document["nodes"]["pick"]["inputs"]["if_false"] = {"param": "words"}
    issues = sfumato.validate_graph(sfumato.Graph.from_dict(document), registry)
    assert [issue.path for issue in issues] == ["nodes.pick.inputs.if_false"]
    assert issues[0].message == ("flow.if takes one type on if_true, if_false: 'if_true' (yes.value) is Float, "
                                 "but 'if_false' (parameter 'words') is Text")


def test_flow_if_output_carries_its_branch_type_to_consumers(registry):
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "test.number"},
        "pick": {"type": "flow.if", "inputs": {"condition": True, "if_true": {"from": "n.value"},
                                               "if_false": {"from": "n.value"}}},
        "stats": {"type": "test.stats", "inputs": {"values": {"from": "pick.value"}}}}})
    issues = sfumato.validate_graph(graph, registry)
    assert [issue.path for issue in issues] == ["nodes.stats.inputs.values"]
    assert "pick.value is Float, but input 'values' of test.stats takes TextList" in issues[0].message


def switch_graph(index: Any) -> sfumato.Graph:
    return sfumato.Graph.from_dict({"version": 1, "params": {"which": {"type": "int", "default": 0}}, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 2.0}},
        "zero": {"type": "test.add", "inputs": {"a": {"from": "n.value"}}},
        "one": {"type": "test.scale", "inputs": {"a": {"from": "n.value"}, "factor": 5.0}},
        "two": {"type": "test.counter", "inputs": {"a": {"from": "n.value"}}},
        "choose": {"type": "flow.switch", "inputs": {"index": index, "case0": {"from": "zero.value"},
                                                     "case1": {"from": "one.value"}, "case2": {"from": "two.value"}}}},
        "outputs": {"value": "choose.value"}})


def test_flow_switch_runs_only_the_chosen_case(engine):
    assert engine.run(switch_graph({"param": "which"}), {"which": 1}).outputs == {"value": 10.0}
    assert (CALLS["test.add"], CALLS["test.scale"]) == (0, 1)
    report = engine.run(switch_graph({"param": "which"}), {"which": 0}).report
    assert report.nodes["two"].status == sfumato.NodeStatus.SKIPPED
    assert (CALLS["test.add"], CALLS["test.scale"]) == (1, 1)


def test_flow_switch_index_outside_its_cases_fails_the_node(engine):
    with pytest.raises(sfumato.NodeExecutionError, match="index 9 is outside 0..7"):
        engine.run(switch_graph(9))
    assert CALLS["test.add"] == CALLS["test.scale"] == 0


def test_chosen_case_without_a_value_fails_with_a_clear_error(engine):
    with pytest.raises(sfumato.NodeExecutionError, match="case3 is chosen but has no value"):
        engine.run(switch_graph(3))


def test_lazy_branches_in_a_sweep_run_per_run_choice(engine):
    outcomes = engine.run_many(if_graph({"param": "go"}), [{"go": True}, {"go": False}, {"go": True}])
    assert [outcome.outputs["value"] for outcome in outcomes] == [11.5, 3.5, 11.5]
    assert CALLS["test.scale"] == 1


def test_lazy_branches_with_parallel_jobs(registry, tmp_path):
    engine = sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out", jobs=3)
    assert engine.run(if_graph(False)).outputs == {"value": 3.5}
    assert CALLS["test.add"] == 1


def test_cached_branch_is_served_when_the_condition_flips_back(engine):
    engine.run(if_graph({"param": "go"}), {"go": True})
    engine.run(if_graph({"param": "go"}), {"go": False})
    CALLS.clear()
    report = engine.run(if_graph({"param": "go"}), {"go": True}).report
    assert report.nodes["after"].status == sfumato.NodeStatus.CACHED
    assert sum(CALLS.values()) == 0


def test_failing_branch_fails_the_run_only_when_taken(engine):
    document = if_graph(True).to_dict()
    document["nodes"]["no"] = {"type": "test.fail", "inputs": {"a": {"from": "n.value"}}}
    assert engine.run(sfumato.Graph.from_dict(document)).outputs == {"value": 11.5}
    document["nodes"]["pick"]["inputs"]["condition"] = False
    with pytest.raises(sfumato.NodeExecutionError, match="boom"):
        engine.run(sfumato.Graph.from_dict(document))


def shipped(name: str) -> sfumato.Graph:
    return sfumato.Graph.load(sfumato.resolve_graph_path(name))


@pytest.mark.slow
def test_generate_until_faithful_retries_with_the_next_seed_only_while_fidelity_falls_short(tmp_path):
    engine = sfumato.Engine(device="cpu", output_dir=tmp_path)
    quick = {"steps": 2, "batch_size": 1}
    attempts = ("attempts/1/make/generate", "attempts/2/make/generate", "attempts/3/make/generate")
    report = engine.run(shipped("generate-until-faithful"), quick).report
    assert [str(report.nodes[node].status) for node in attempts] == ["ran", "skipped", "skipped"]
    assert report.nodes["attempts/2/make/generate"].reason.startswith("untaken branch")
    # With one denoising step, seed 0 misses (fidelity 0) and seed 1 hits: the third attempt never runs.
    result = engine.run(shipped("generate-until-faithful"), {**quick, "steps": 1})
    assert (result.values["attempts/1/make/faithful"]["value"], result.outputs["fidelity"]) == (0.0, 1.0)
    assert [str(result.report.nodes[node].status) for node in attempts] == ["ran", "ran", "skipped"]
    # A white circle on white is never judged right: every attempt runs, and the last one is the answer.
    result = engine.run(shipped("generate-until-faithful"),
                        {**quick, "steps": 1, "prompt": "a white circle on a white background"})
    assert result.outputs == {"fidelity": 0.0}
    assert [str(result.report.nodes[node].status) for node in attempts] == ["ran"] * 3


@pytest.mark.slow
def test_draft_or_final_runs_only_the_chosen_subgraph(tmp_path):
    engine = sfumato.Engine(device="cpu", output_dir=tmp_path)
    report = engine.run(shipped("draft-or-final")).report
    assert report.nodes["draft/generate"].status == sfumato.NodeStatus.RAN
    assert report.nodes["final_batch/generate"].status == sfumato.NodeStatus.SKIPPED
    assert len(report.files) == 1  # the draft's one image


def test_progress_events_announce_skipped_branches(registry, tmp_path):
    events: list[sfumato.RunEvent] = []
    engine = sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out", observers=[events.append])
    engine.run(if_graph(False))
    skipped = [event for event in events if isinstance(event, sfumato.NodeSkipped)]
    assert [(event.node_id, event.node_type, event.kind) for event in skipped] == [
        ("yes", "test.add", "node_skipped")]
    assert "untaken branch" in skipped[0].reason


#: A loop body: the state plus one; done once it reaches 3.
COUNT_UP = {
    "version": 1,
    "params": {"state": {"type": "float", "default": 0.0}, "step": {"type": "float", "default": 1.0}},
    "nodes": {"next": {"type": "test.add", "inputs": {"a": {"param": "state"}, "b": {"param": "step"}}},
              "enough": {"type": "flow.compare", "inputs": {"a": {"from": "next.value"}, "b": 3.0, "op": ">="}}},
    "outputs": {"state": "next.value", "done": "enough.result"},
}


def loop_graph(tmp_path, **loop_inputs: Any) -> sfumato.Graph:
    (tmp_path / "count-up.json").write_text(json.dumps(COUNT_UP))
    path = tmp_path / "loop.json"
    path.write_text(json.dumps({"version": 1, "nodes": {
        "start": {"type": "test.number", "inputs": {"value": 0.0}},
        "count": {"type": "flow.loop", "inputs": {"body": "graph:count-up.json", "state": {"from": "start.value"},
                                                  **loop_inputs}}},
        "outputs": {"state": "count.state", "done": "count.done"}}))
    return sfumato.Graph.load(path)


def test_flow_loop_stops_at_the_first_iteration_that_is_done(engine, tmp_path):
    result = engine.run(loop_graph(tmp_path, max_iterations=10))
    assert result.outputs == {"state": 3.0, "done": True}
    assert CALLS["test.add"] == 3
    assert result.report.nodes["count/3/next"].status == sfumato.NodeStatus.RAN
    assert result.report.nodes["count/4/next"].status == sfumato.NodeStatus.SKIPPED
    assert result.report.nodes["count/4/next"].reason.startswith("untaken branch")


def test_flow_loop_stops_at_max_iterations_with_the_last_state(engine, tmp_path):
    result = engine.run(loop_graph(tmp_path, max_iterations=2))
    assert result.outputs == {"state": 2.0, "done": False}
    assert CALLS["test.add"] == 2


def test_flow_loop_passes_its_other_inputs_to_every_iteration(engine, tmp_path):
    result = engine.run(loop_graph(tmp_path, max_iterations=10, step=2.0))
    assert result.outputs == {"state": 4.0, "done": True}
    assert CALLS["test.add"] == 2


def test_flow_loop_requires_a_literal_bound(registry, tmp_path):
    for bound in ({}, {"max_iterations": 0}, {"max_iterations": 1000}, {"max_iterations": {"param": "n"}}):
        issues = sfumato.validate_graph(loop_graph(tmp_path, **bound), registry)
        assert [issue.path for issue in issues] == ["nodes.count.inputs.max_iterations"], bound
        assert "a loop is always bounded" in issues[0].message


def test_flow_loop_body_must_declare_state_and_done(registry, tmp_path):
    (tmp_path / "no-done.json").write_text(json.dumps({**COUNT_UP, "outputs": {"state": "next.value"}}))
    graph = loop_graph(tmp_path, max_iterations=3, body="graph:no-done.json")
    issues = sfumato.validate_graph(graph, registry)
    assert [issue.path for issue in issues] == ["nodes.count.inputs.body"]
    assert "has no output 'done'" in issues[0].message


def test_flow_loop_state_is_typed_by_the_body(registry, tmp_path):
    graph = loop_graph(tmp_path, max_iterations=3)
    document = graph.to_dict()
    document["nodes"]["words"] = {"type": "test.stats", "inputs": {"values": ["a"]}}
    document["nodes"]["count"]["inputs"]["state"] = {"from": "words.total"}
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(document))
    assert sfumato.validate_graph(sfumato.Graph.load(path), registry) == []
    document["nodes"]["text"] = {"type": "text.normalize", "inputs": {"text": "x"}}
    document["nodes"]["count"]["inputs"]["state"] = {"from": "text.text"}
    path.write_text(json.dumps(document))
    issues = sfumato.validate_graph(sfumato.Graph.load(path), registry)
    assert [issue.path for issue in issues] == ["nodes.count/1.inputs.state"]
    assert "text.text is Text" in issues[0].message and "nodes.next.inputs.a" in issues[0].message


#: A graph type: x * 2 through test.scale, which has a batch function.
DOUBLE = {"version": 1, "params": {"x": {"type": "float", "default": 0.0}, "factor": {"type": "float", "default": 2.0}},
          "nodes": {"twice": {"type": "test.scale", "inputs": {"a": {"param": "x"}, "factor": {"param": "factor"}}},
                    "plus": {"type": "test.add", "inputs": {"a": {"from": "twice.value"}, "b": 0.5}}},
          "outputs": {"value": "twice.value", "plus": "plus.value"}}


@pytest.fixture
def map_engine(tmp_path):
    import types

    from conftest import test_plugin

    plugin = types.ModuleType("sfumato_test_mapped")

    @sfumato.hookimpl
    def sfumato_graph_types() -> list[Any]:
        return [sfumato.GraphType("test.double", sfumato.Graph.from_dict(DOUBLE))]

    plugin.sfumato_graph_types = sfumato_graph_types  # type: ignore[attr-defined]
    registry = sfumato.Registry.load(plugins=[test_plugin, plugin])
    CALLS.clear()
    return sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out")


def map_graph(**inputs: Any) -> sfumato.Graph:
    return sfumato.Graph.from_dict({"version": 1, "params": {"xs": {"type": "list[float]", "default": [1, 2, 3, 4, 5]}},
                                    "nodes": {"m": {"type": "flow.map", "inputs": {"items": {"param": "xs"},
                                                                                   "graph": "test.double",
                                                                                   "item": "x", **inputs}}},
                                    "outputs": {"results": "m.results"}})


def test_flow_map_runs_a_graph_per_item_using_the_batch_function(map_engine):
    from conftest import BATCH_SIZES

    BATCH_SIZES.clear()
    result = map_engine.run(map_graph(output="value"))
    assert result.outputs == {"results": [2.0, 4.0, 6.0, 8.0, 10.0]}
    assert BATCH_SIZES == [5] and CALLS["test.scale"] == 0  # one batched call, not five


def test_flow_map_without_an_output_name_gives_every_output_per_item(map_engine):
    result = map_engine.run(map_graph(batch_size=2), {"xs": [1.0, 3.0]})
    assert result.outputs == {"results": [{"value": 2.0, "plus": 2.5}, {"value": 6.0, "plus": 6.5}]}


def test_flow_map_items_already_computed_come_from_the_cache(map_engine):
    map_engine.run(map_graph(output="plus"), {"xs": [1.0, 2.0]})
    CALLS.clear()
    assert map_engine.run(map_graph(output="plus"), {"xs": [1.0, 2.0, 7.0]}).outputs == {"results": [2.5, 4.5, 14.5]}
    assert CALLS["test.add"] == 1  # only the new item's inner nodes ran


def test_flow_map_checks_its_graph_at_validation(map_engine):
    registry = map_engine.registry
    issues = sfumato.validate_graph(map_graph(graph="test.triple"), registry)
    assert [issue.path for issue in issues] == ["nodes.m.inputs.graph"]
    assert "no graph type or shipped graph 'test.triple'" in issues[0].message
    issues = sfumato.validate_graph(map_graph(item="y", output="nothing"), registry)
    assert [issue.path for issue in issues] == ["nodes.m.inputs.item", "nodes.m.inputs.output"]


def test_flow_map_item_that_fails_names_it(map_engine):
    with pytest.raises(sfumato.NodeExecutionError, match=r'graph .test.double. failed for parameter set 1 \{"factor": -1.0\}.*negative factor'):
        map_engine.run(map_graph(output="value", item="factor"), {"xs": [2.0, -1.0]})


@pytest.mark.slow
def test_fidelity_by_prompt_maps_make_images_over_the_prompts(tmp_path):
    engine = sfumato.Engine(device="cpu", output_dir=tmp_path)
    prompts = ["a red circle on a black background", "a yellow triangle on a white background"]
    result = engine.run(shipped("fidelity-by-prompt"), {"prompts": prompts})
    assert result.outputs == {"fidelity": [1.0, 1.0]}
