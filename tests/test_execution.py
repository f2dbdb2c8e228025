"""Running graphs: pulled execution, incremental re-runs, disk cache, failures."""

from __future__ import annotations

import json
import threading
import types

import pytest

import sfumato
from conftest import CALLS, chain_graph, test_plugin
from sfumato import (
    Engine,
    Graph,
    NodeCached,
    NodeExecutionError,
    NodeFinished,
    NodeProgress,
    RunCancelledError,
    RunContext,
    RunFailedError,
    node,
)


def test_chain_computes_its_output(engine):
    result = engine.run(chain_graph(5, value=2.0))
    assert result["result"] == 6.0
    assert result.report.count("ran") == 5


def test_long_chain_runs_without_recursion_limits(engine):
    result = engine.run(chain_graph(3000))
    assert result["result"] == 3000.0


def test_nodes_that_feed_no_output_are_skipped(engine):
    graph = Graph.from_dict({"version": 1, "nodes": {
        "a": {"type": "test.number", "inputs": {"value": 1}},
        "unused": {"type": "test.add", "inputs": {"a": {"from": "a.value"}}},
        "out": {"type": "test.record", "inputs": {"a": {"from": "a.value"}}}}})
    report = engine.run(graph).report
    assert report.nodes["unused"].status == "skipped"
    assert CALLS["test.add"] == 0 and CALLS["test.record"] == 1


def test_rerun_with_one_changed_input_reruns_only_its_descendants(engine):
    graph = Graph.from_dict({"version": 1, "params": {"b": {"type": "float", "default": 1.0}}, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 1}},
        "x": {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": 5}},
        "y": {"type": "test.add", "inputs": {"a": {"from": "x.value"}, "b": {"param": "b"}}},
        "z": {"type": "test.add", "inputs": {"a": {"from": "y.value"}}}},
        "outputs": {"z": "z.value"}})
    first = engine.run(graph)
    second = engine.run(graph, b=2.0)
    assert (first["z"], second["z"]) == (7.0, 8.0)
    statuses = {n: r.status for n, r in second.report.nodes.items()}
    assert statuses == {"n": "skipped", "x": "cached", "y": "ran", "z": "ran"}
    third = engine.run(graph, b=2.0)
    assert {n: r.status for n, r in third.report.nodes.items()}["z"] == "cached"


def test_node_version_is_part_of_the_signature(engine, registry):
    graph = chain_graph(2)
    before = engine.plan(graph).nodes["n1"].signature
    registry.nodes["test.add"].version += 1
    try:
        assert engine.plan(graph).nodes["n1"].signature != before
    finally:
        registry.nodes["test.add"].version -= 1


def test_volatile_node_always_reruns(engine):
    graph = Graph.from_dict({"version": 1, "nodes": {"c": {"type": "test.clock"}}, "outputs": {"t": "c.value"}})
    assert engine.run(graph)["t"] != engine.run(graph)["t"]


def test_no_cache_reruns_everything(registry, tmp_path):
    engine = Engine(registry, cache=False, output_dir=tmp_path)
    engine.run(chain_graph(3))
    assert engine.run(chain_graph(3)).report.count("ran") == 3


def test_disk_cache_survives_a_new_engine(registry, tmp_path):
    graph = chain_graph(4)
    Engine(registry, cache_dir=tmp_path / "cache", output_dir=tmp_path).run(graph)
    fresh = Engine(registry, cache_dir=tmp_path / "cache", output_dir=tmp_path)
    result = fresh.run(graph)
    assert result["result"] == 4.0
    assert result.report.count("ran") == 0 and result.report.nodes["n3"].status == "cached"


def test_corrupt_disk_cache_entry_is_discarded_and_recomputed(registry, tmp_path):
    graph = chain_graph(2)
    Engine(registry, cache_dir=tmp_path / "cache", output_dir=tmp_path).run(graph)
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    assert manifests
    for manifest in manifests:
        data = json.loads(manifest.read_text())
        data["outputs"]["value"] = {"json": 12345.0}
        data["signature"] = "tampered"
        manifest.write_text(json.dumps(data))
    fresh = Engine(registry, cache_dir=tmp_path / "cache", output_dir=tmp_path)
    result = fresh.run(graph)
    assert result["result"] == 2.0 and result.report.count("ran") == 2
    assert fresh.disk.discarded


def test_truncated_disk_cache_file_is_not_trusted(registry, tmp_path):
    graph = Graph.from_dict({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "hi", "width": 32, "height": 32}}},
        "outputs": {"img": "card.images"}})
    Engine(registry, cache_dir=tmp_path / "c", output_dir=tmp_path).run(graph)
    [png] = list((tmp_path / "c").rglob("*.png"))
    png.write_bytes(png.read_bytes()[:20])
    result = Engine(registry, cache_dir=tmp_path / "c", output_dir=tmp_path).run(graph)
    assert result.report.nodes["card"].status == "ran" and result["img"].images[0].size == (32, 32)


def test_failing_node_names_id_and_type_and_keeps_finished_results(engine):
    graph = Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 1}},
        "f": {"type": "test.fail", "inputs": {"a": {"from": "n.value"}, "message": "bad input"}}},
        "outputs": {"f": "f.value"}})
    with pytest.raises(NodeExecutionError) as error:
        engine.run(graph)
    assert error.value.node_id == "f" and error.value.node_type == "test.fail"
    assert isinstance(error.value.original, RuntimeError) and "bad input" in str(error.value)
    assert error.value.report.nodes["n"].status == "ran"
    with pytest.raises(NodeExecutionError):
        engine.run(graph)
    assert CALLS["test.number"] == 1  # the finished node came from the cache


def _branching_graph():
    return Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 1}},
        "f": {"type": "test.fail", "inputs": {"a": {"from": "n.value"}}},
        "after": {"type": "test.record", "inputs": {"a": {"from": "f.value"}}},
        "ok": {"type": "test.record", "inputs": {"a": {"from": "n.value"}}}}})


@pytest.mark.parametrize("jobs", [1, 3])
def test_keep_going_lets_independent_branches_finish(registry, tmp_path, jobs):
    engine = Engine(registry, output_dir=tmp_path, jobs=jobs)
    with pytest.raises(RunFailedError) as error:
        engine.run(_branching_graph(), keep_going=True)
    statuses = {n: r.status for n, r in error.value.report.nodes.items()}
    assert statuses == {"n": "ran", "f": "failed", "after": "blocked", "ok": "ran"}


def test_parallel_jobs_give_the_same_results(registry, tmp_path):
    builder_graph = Graph.from_dict({"version": 1, "nodes": {
        **{f"n{i}": {"type": "test.number", "inputs": {"value": i}} for i in range(8)},
        **{f"a{i}": {"type": "test.add", "inputs": {"a": {"from": f"n{i}.value"}, "b": 1}} for i in range(8)},
        **{f"r{i}": {"type": "test.record", "inputs": {"a": {"from": f"a{i}.value"}}} for i in range(8)}}})
    result = Engine(registry, output_dir=tmp_path, jobs=4).run(builder_graph)
    assert all(result.values[f"r{i}"]["value"] == i + 1 for i in range(8))


def test_class_node_keeps_its_state_within_an_engine(registry, tmp_path):
    engine = Engine(registry, cache=False, output_dir=tmp_path)
    graph = Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 0}},
        "c": {"type": "test.counter", "inputs": {"a": {"from": "n.value"}}}}, "outputs": {"c": "c.value"}})
    assert [engine.run(graph)["c"] for _ in range(3)] == [1.0, 2.0, 3.0]


def test_events_reach_observers(registry, tmp_path):
    events = []
    engine = Engine(registry, output_dir=tmp_path, observers=[events.append])
    graph = Graph.from_dict({"version": 1, "nodes": {
        "n": {"type": "test.number"}, "r": {"type": "test.record", "inputs": {"a": {"from": "n.value"}}}}})
    engine.run(graph)
    engine.run(graph)
    kinds = [e.kind for e in events]
    assert kinds.count("node_finished") == 2 and "node_progress" in kinds and "node_cached" in kinds
    assert any(isinstance(e, NodeProgress) and e.node_id == "r" for e in events)
    assert any(isinstance(e, NodeCached) for e in events) and any(isinstance(e, NodeFinished) for e in events)


def test_a_failing_observer_does_not_stop_the_run(registry, tmp_path):
    def broken(event):
        raise ValueError("observer bug")

    engine = Engine(registry, output_dir=tmp_path, observers=[broken])
    assert engine.run(chain_graph(2))["result"] == 2.0
    assert engine.event_errors


def test_cancelled_run_stops_between_nodes(engine):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelledError):
        engine.run(chain_graph(3), cancel_event=cancel)


def test_multiple_named_outputs(engine):
    graph = Graph.from_dict({"version": 1, "nodes": {"s": {"type": "test.stats", "inputs": {"values": ["ab", "c"]}}},
                             "outputs": {"total": "s.total", "count": "s.count"}})
    result = engine.run(graph)
    assert (result["total"], result["count"]) == (3.0, 2)


def test_the_run_seed_sets_the_graphs_seed_parameter(engine):
    graph = Graph.from_dict({"version": 1, "params": {"seed": {"type": "int", "default": 0}}, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": {"param": "seed"}}}}, "outputs": {"v": "n.value"}})
    assert engine.run(graph, seed=7)["v"] == 7.0
    assert engine.run(graph, {"seed": 3}, seed=7)["v"] == 3.0  # an explicit parameter wins
    assert engine.run(graph).report.seed == 0


@node("ctx.seeded", category="test", output="value")
def seeded_without_declaring(a: float, context: RunContext) -> float:
    """Reads the run seed but declares only the default context keys (device, dtype)."""
    return a + context.seed


@node("ctx.seeded_declared", category="test", output="value", cache=sfumato.CachePolicy.reads_context("seed"))
def seeded_declared(a: float, context: RunContext) -> float:
    """Reads the run seed and says so."""
    return a + context.seed


@node("ctx.seeded_volatile", category="test", output="value", cache=sfumato.CachePolicy.volatile())
def seeded_volatile(a: float, context: RunContext) -> float:
    """Never cached, so it may read anything."""
    return a + context.seed + len(context.params)


@node("ctx.params_via_call", category="test", output="value")
def params_via_call(a: float, context: RunContext) -> float:
    """Reads the seed through another node's implementation (call_node)."""
    return context.call_node("ctx.seeded_declared", a=a)


def _context_registry():
    plugin = types.ModuleType("ctx_nodes")
    plugin.sfumato_node_types = sfumato.hookimpl(  # type: ignore[attr-defined]
        lambda: [seeded_without_declaring, seeded_declared, seeded_volatile, params_via_call])
    return sfumato.Registry.load(entry_points=False, plugins=[plugin])


def _seed_graph(node_type):
    builder = sfumato.GraphBuilder("seeds")
    handle = builder.add(node_type, "s", a=100.0)
    builder.output("v", handle["value"])
    return builder.build()


def test_an_undeclared_seed_read_is_refused_the_first_time_with_a_fix(tmp_path):
    engine = Engine(_context_registry(), device="cpu", output_dir=tmp_path)
    with pytest.raises(NodeExecutionError) as caught:
        engine.run(_seed_graph("ctx.seeded"), seed=1)
    assert isinstance(caught.value.original, sfumato.UndeclaredContextReadError)
    message = str(caught.value)
    assert "node 's' (ctx.seeded)" in message and "'seed'" in message and 'context_keys=("device", "dtype", "seed")' in message


def test_a_declared_seed_read_never_gets_another_seeds_cached_result(tmp_path):
    engine = Engine(_context_registry(), device="cpu", output_dir=tmp_path)
    assert engine.run(_seed_graph("ctx.seeded_declared"), seed=1)["v"] == 101.0
    assert engine.run(_seed_graph("ctx.seeded_declared"), seed=2)["v"] == 102.0
    assert engine.run(_seed_graph("ctx.seeded_declared"), seed=1).report.nodes["s"].status == "cached"


def test_a_volatile_node_may_read_any_run_setting(tmp_path):
    engine = Engine(_context_registry(), device="cpu", output_dir=tmp_path)
    assert engine.run(_seed_graph("ctx.seeded_volatile"), seed=3)["v"] == 103.0


def test_a_read_through_call_node_is_held_to_the_callers_declaration(tmp_path):
    engine = Engine(_context_registry(), device="cpu", output_dir=tmp_path)
    with pytest.raises(NodeExecutionError) as caught:
        engine.run(_seed_graph("ctx.params_via_call"), seed=1)
    assert "node 's' (ctx.seeded_declared)" in str(caught.value) and "'seed'" in str(caught.value)


def test_plugin_event_hook_errors_appear_in_the_run_report_with_the_plugin_name(tmp_path):
    plugin = types.ModuleType("noisy_observer")
    plugin.sfumato_run_event = sfumato.hookimpl(lambda event: 1 / 0)  # type: ignore[attr-defined]
    registry = sfumato.Registry.load(entry_points=False, plugins=[plugin, test_plugin])
    result = Engine(registry, device="cpu", output_dir=tmp_path).run(chain_graph(3))
    assert result["result"] == 3.0
    [entry] = result.report.event_errors
    assert entry["source"] == "plugin 'noisy_observer' (sfumato_run_event)"
    assert entry["error"].startswith("ZeroDivisionError") and entry["count"] > 3
    assert result.report.as_dict()["event_errors"] == [entry]


def test_engine_event_errors_are_bounded(tmp_path):
    def broken(event):
        raise ValueError("observer bug")

    engine = Engine(_context_registry(), device="cpu", output_dir=tmp_path, observers=[broken])
    for _ in range(60):
        engine.run(_seed_graph("ctx.seeded_declared"), seed=1)
    assert len(engine.event_errors) == Engine.MAX_EVENT_ERRORS

