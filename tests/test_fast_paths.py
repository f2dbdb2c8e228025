"""The engine's fast paths behave exactly as the general ones they stand in for.

Planning orders nodes without networkx, a single run on one job walks the plan
order instead of the ready-queue, per-node events are made only when someone
listens, port checks are looked up once per plan, and the JSON check measures
nesting by peeling bracket pairs. Each test here pins one of them to the
behaviour of the slower path.
"""

from __future__ import annotations

import gc
import json
import types
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import sfumato
import sfumato.testing as st
from sfumato.graph.jsontext import MAX_DEPTH, _surely_clean, _walk_problems
from sfumato.run.planning import _Dag


@sfumato.node("fast.number", category="test", output="value")
def number(value: float = 1.0) -> float:
    return value


@sfumato.node("fast.fail_on", category="test", output="value")
def fail_on(x: float, bad: float = -1.0) -> float:
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x + 1


@sfumato.node("fast.add", category="test", output="value")
def add(a: float, b: float = 0.0) -> float:
    return a + b


@sfumato.node("fast.anything", category="test", output="value")
def anything(text: str = "not a number") -> Any:
    return text


@sfumato.node("fast.wrong_output", category="test", output="value")
def wrong_output(x: float) -> float:
    return "not a number"  # type: ignore[return-value]


@sfumato.node("fast.seeded", category="test", output="value", cache=sfumato.CachePolicy.reads_context("seed"))
def seeded(x: float, context: sfumato.RunContext, scale: float = 2.0) -> float:
    return x * scale + context.seed


@sfumato.node("fast.fingerprinted", category="test", output="value",
              cache=sfumato.CachePolicy(fingerprint=lambda literals: f"tag-{literals['tag']}"))
def fingerprinted(a: float, b: float, tag: str = "t") -> float:
    return a - b


plugin = types.ModuleType("fast_plugin")
plugin.sfumato_node_types = sfumato.hookimpl(  # type: ignore[attr-defined]
    lambda: [number, fail_on, add, anything, wrong_output, seeded, fingerprinted])


def _branching() -> sfumato.Graph:
    """Two failures in a diamond with an independent branch: what is downstream of them is blocked."""
    return sfumato.Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "fast.number", "inputs": {"value": 2}},
        "f": {"type": "fast.fail_on", "inputs": {"x": {"from": "n.value"}, "bad": 2}},
        "g": {"type": "fast.add", "inputs": {"a": {"from": "n.value"}, "b": 1}},
        "after_f": {"type": "fast.add", "inputs": {"a": {"from": "f.value"}}},
        "join": {"type": "fast.add", "inputs": {"a": {"from": "after_f.value"}, "b": {"from": "g.value"}}},
        "h": {"type": "fast.add", "inputs": {"a": {"from": "g.value"}, "b": 5}},
        "z": {"type": "fast.fail_on", "inputs": {"x": {"from": "h.value"}, "bad": 8}},
        "after_z": {"type": "fast.add", "inputs": {"a": {"from": "z.value"}}},
        "free": {"type": "fast.add", "inputs": {"a": {"from": "h.value"}}}}})


def _run_keep_going(engine: sfumato.Engine) -> sfumato.RunReport:
    with pytest.raises(sfumato.RunFailedError) as failed:
        engine.run(_branching(), keep_going=True)
    return failed.value.report


def test_a_single_run_on_one_job_blocks_what_the_ready_queue_blocks(tmp_path):
    started: list[str] = []
    one = st.make_engine(plugin, output_dir=tmp_path / "one",
                         observers=[lambda e: started.append(e.node_id) if isinstance(e, sfumato.NodeStarted) else None])
    queued = st.make_engine(plugin, output_dir=tmp_path / "queued", jobs=3)
    in_order, by_queue = _run_keep_going(one), _run_keep_going(queued)
    statuses = {node: str(record.status) for node, record in in_order.nodes.items()}
    assert statuses == {node: str(record.status) for node, record in by_queue.nodes.items()}
    assert statuses == {"n": "ran", "f": "failed", "g": "ran", "after_f": "blocked", "join": "blocked",
                        "h": "ran", "z": "failed", "after_z": "blocked", "free": "ran"}
    plan = one.plan(_branching())
    assert started == [node for node in plan.order if statuses[node] != "blocked"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(hs.integers(1, 12).flatmap(lambda n: hs.tuples(
    hs.permutations(range(n)), hs.lists(hs.tuples(hs.integers(0, n - 1), hs.integers(0, n - 1)), max_size=3 * n))))
def test_plan_order_is_the_topological_order_networkx_gives(case):
    nodes, pairs = case
    edges = [(f"n{min(a, b)}", f"n{max(a, b)}") for a, b in pairs if a != b]  # acyclic: low to high
    names = [f"n{i}" for i in nodes]
    dag, reference = _Dag(names), nx.DiGraph()
    reference.add_nodes_from(names)
    for source, target in edges:
        dag.add_edge(source, target)
        reference.add_edge(source, target)
    assert dag.order() == list(nx.topological_sort(reference))
    assert not dag.has_cycle()


def test_a_cycle_is_still_reported_with_its_nodes():
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "a": {"type": "fast.add", "inputs": {"a": {"from": "b.value"}}},
        "b": {"type": "fast.add", "inputs": {"a": {"from": "a.value"}}},
        "c": {"type": "fast.add", "inputs": {"a": {"from": "c.value"}}}}})
    messages = [issue.message for issue in sfumato.validate_graph(graph, st.plugin_registry(plugin))]
    assert "cycle between nodes 'a', 'b'" in messages and "cycle between nodes 'c'" in messages


def test_node_events_reach_a_plugin_hook_when_no_observer_listens(tmp_path):
    heard: list[tuple[str, str]] = []
    listener = types.ModuleType("fast_listener")
    listener.sfumato_run_event = sfumato.hookimpl(  # type: ignore[attr-defined]
        lambda event: heard.append((type(event).__name__, getattr(event, "node_id", ""))))
    engine = st.make_engine(plugin, listener, output_dir=tmp_path)
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "fast.number", "inputs": {"value": 3}}}, "outputs": {"y": "n.value"}})
    engine.run(graph)
    engine.run(graph)
    assert [kind for kind, node in heard if node == "n"] == ["NodeStarted", "NodeFinished", "NodeCached"]


def test_a_value_of_the_wrong_type_on_a_link_fails_the_node_it_reaches(tmp_path):
    engine = st.make_engine(plugin, output_dir=tmp_path)
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "any": {"type": "fast.anything"},
        "add": {"type": "fast.add", "inputs": {"a": {"from": "any.value"}}}}, "outputs": {"y": "add.value"}})
    with pytest.raises(sfumato.NodeExecutionError) as failed:
        engine.run(graph)
    assert failed.value.node_id == "add" and "input 'a' from any.value: expected Float, got str" in str(failed.value)


def test_an_output_of_the_wrong_type_fails_the_node_that_returned_it(tmp_path):
    engine = st.make_engine(plugin, output_dir=tmp_path)
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "fast.number"},
        "w": {"type": "fast.wrong_output", "inputs": {"x": {"from": "n.value"}}}}, "outputs": {"y": "w.value"}})
    with pytest.raises(sfumato.NodeExecutionError) as failed:
        engine.run(graph)
    assert failed.value.node_id == "w" and "returned a bad value for output 'value'" in str(failed.value)


def _nested(depth: int, text: str) -> Any:
    value: Any = text
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "s": text}
    return value


@pytest.mark.parametrize("depth", [1, 15, 16, 17, 40, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 90])
@pytest.mark.parametrize("text", ["plain", "]]]}}", "[[{{", 'a "quoted" ] \\ [ text'])
def test_nesting_is_measured_past_the_levels_peeled_at_c_speed(depth, text):
    value = {"a": _nested(depth, text), "b": [[text]]}
    exact = _walk_problems(value, "", max_depth=MAX_DEPTH, limit=20) == []
    assert _surely_clean(value, MAX_DEPTH) == exact
    assert exact == (depth + 1 <= MAX_DEPTH)  # the top object is one level
    assert json.loads(json.dumps(value)) == value


def test_cache_signatures_are_those_of_earlier_versions():
    # Cache keys outlive a process (the disk cache): signing faster must not change one bit of them.
    graph = sfumato.Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "fast.number", "inputs": {"value": 2.5}},
        "m": {"type": "fast.number"},
        "s": {"type": "fast.seeded", "inputs": {"x": {"from": "n.value"}, "scale": 3}},
        "f": {"type": "fast.fingerprinted", "inputs": {"b": {"from": "s.value"}, "a": {"from": "m.value"},
                                                        "tag": "x"}},
        "j": {"type": "fast.add", "inputs": {"b": {"from": "f.value"}, "a": {"from": "n.value"}}}},
        "outputs": {"y": "j.value"}})
    plan = sfumato.plan_run(graph, st.plugin_registry(plugin), seed=7, run_context={"device": "cpu"})
    assert {node: planned.signature for node, planned in plan.nodes.items()} == SIGNATURES


#: As signed by the tree before the fast paths (21e5874); the same today.
SIGNATURES = {"n": "2ab5201a33f5d6a69d351da8584b18d0c2e1d47d", "m": "a6e14c10ada709ccdedf34df7f65f4d3eb985948",
              "s": "b08e2216832968939039555a02504743a8c68b48", "f": "bb3a9bf3773ab53a6baf577c6ce6736aba09e5c9",
              "j": "1758dd8552a272d656499109d93bffdb8e71aafe"}


def test_a_large_graph_and_its_plan_are_kept_in_the_oldest_generation():
    # Made with the collector paused, they are promoted once when it resumes, so that the young
    # collections while nodes run do not walk them again and again (a tenth of a cold run's time).
    if not gc.isenabled():
        pytest.skip("the collector is off")
    gc.collect()
    document = {"version": 1, "nodes": {f"n{i}": {"type": "fast.number", "inputs": {"value": i}} for i in range(3000)}}
    graph = sfumato.Graph.from_dict(document)
    plan = sfumato.plan_run(graph, st.plugin_registry(plugin))
    oldest = gc.get_objects(2)
    assert any(item is graph.document for item in oldest)
    assert any(item is plan.nodes["n0"] for item in oldest)
