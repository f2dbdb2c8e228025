"""The one scheduler: single runs, --jobs, sweeps and batches share readiness, failure and cancellation."""

from __future__ import annotations

import threading
import types
from typing import Any

import pytest

import sfumato
import sfumato.testing as st

CANCEL_AFTER: dict[str, Any] = {}
SLOW_CALLS: list[float] = []


@sfumato.node("sched.slow", category="test", output="value", cache=sfumato.CachePolicy.reads_context())
def slow(x: float, context: sfumato.RunContext) -> float:
    """Counts its calls; cancels the run after a given number."""
    SLOW_CALLS.append(x)
    event = CANCEL_AFTER.get("event")
    if event is not None and len(SLOW_CALLS) >= CANCEL_AFTER["after"]:
        event.set()
    return x


@sfumato.node("sched.load", category="test", output="value", cache=sfumato.CachePolicy.reads_context())
def load(x: float, context: sfumato.RunContext) -> float:
    """Loads (once per process) a 'model' named after its input."""
    return context.models.get(f"model-{x:g}", "cpu", "float32", lambda: x * 10)


@sfumato.node("sched.fail_on", category="test", output="value")
def fail_on(x: float, bad: float = -1.0) -> float:
    """Fails for one value."""
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x + 1


@sfumato.node("sched.plus", category="test", output="value")
def plus(a: float, b: float = 1.0) -> float:
    """a + b."""
    return a + b


plugin = types.ModuleType("sched_plugin")
plugin.sfumato_node_types = sfumato.hookimpl(lambda: [slow, load, fail_on, plus])  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _reset():
    CANCEL_AFTER.clear()
    SLOW_CALLS.clear()


def graph(node_type: str, **inputs: Any) -> sfumato.Graph:
    """x -> node_type -> sched.plus -> output y."""
    builder = sfumato.GraphBuilder("sched")
    x = builder.param("x", "float", default=1.0)
    first = builder.add(node_type, **{"a" if node_type == "sched.plus" else "x": x}, **inputs)
    after = builder.add("sched.plus", a=first["value"])
    builder.output("y", after["value"])
    return builder.build()


def test_cancelling_a_sweep_stops_its_remaining_runs(tmp_path):
    engine = st.make_engine(plugin, output_dir=tmp_path)
    cancel = threading.Event()
    CANCEL_AFTER.update(event=cancel, after=2)
    with pytest.raises(sfumato.RunCancelledError):
        engine.run_many(graph("sched.slow"), [{"x": x} for x in range(10)], cancel_event=cancel)
    assert len(SLOW_CALLS) == 2


def test_a_cancelled_sweep_reports_every_run_as_cancelled(tmp_path):
    finished: list[str] = []
    engine = st.make_engine(plugin, output_dir=tmp_path,
                            observers=[lambda e: finished.append(e.status) if isinstance(e, sfumato.RunFinished) else None])
    cancel = threading.Event()
    CANCEL_AFTER.update(event=cancel, after=1)
    with pytest.raises(sfumato.RunCancelledError):
        engine.run_many(graph("sched.slow"), [{"x": x} for x in range(4)], cancel_event=cancel)
    assert finished == ["cancelled"] * 4


def test_model_loads_in_a_sweep_are_credited_to_the_run_that_loaded_them(tmp_path):
    engine = st.make_engine(plugin, output_dir=tmp_path)
    outcomes = engine.run_many(graph("sched.load"), [{"x": x} for x in (1, 2, 3)])
    loaded = [[entry["model"] for entry in outcome.report.models] for outcome in outcomes]
    assert loaded == [["model-1 [cpu, float32]"], ["model-2 [cpu, float32]"], ["model-3 [cpu, float32]"]]


def test_model_load_events_carry_the_run_id_of_the_run_that_loaded(tmp_path):
    events: list[sfumato.RunEvent] = []
    engine = st.make_engine(plugin, output_dir=tmp_path, observers=[events.append])
    outcomes = engine.run_many(graph("sched.load"), [{"x": x} for x in (4, 5)])
    load_runs = [event.run_id for event in events if isinstance(event, sfumato.ModelLoaded)]
    assert load_runs == [outcome.report.run_id for outcome in outcomes]


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_failed_run_of_a_sweep_blocks_only_its_own_descendants(tmp_path, jobs):
    engine = st.make_engine(plugin, output_dir=tmp_path, jobs=jobs)
    outcomes = engine.run_many(graph("sched.fail_on", bad=2.0), [{"x": x} for x in range(4)])
    assert [outcome.status for outcome in outcomes] == ["ok", "ok", "failed", "ok"]
    assert outcomes[2].report.nodes["plus"].status == sfumato.NodeStatus.BLOCKED
    assert [outcome.outputs.get("y") for outcome in outcomes] == [2.0, 3.0, None, 5.0]


def test_sweeps_with_jobs_give_the_same_outputs_as_without(tmp_path):
    sequential = st.make_engine(plugin, output_dir=tmp_path / "one", jobs=1)
    parallel = st.make_engine(plugin, output_dir=tmp_path / "four", jobs=4)
    params = [{"x": x} for x in range(12)]
    one = [o.outputs["y"] for o in sequential.run_many(graph("sched.plus"), params)]
    four = [o.outputs["y"] for o in parallel.run_many(graph("sched.plus"), params)]
    assert one == four == [x + 2.0 for x in range(12)]


def test_statuses_are_an_enum_that_reads_as_text(tmp_path):
    engine = st.make_engine(plugin, output_dir=tmp_path)
    result = engine.run(graph("sched.plus"))
    assert all(isinstance(record.status, sfumato.NodeStatus) for record in result.report.nodes.values())
    assert result.report.status == sfumato.RunStatus.OK == "ok"
    assert result.report.as_dict()["status"] == "ok"
