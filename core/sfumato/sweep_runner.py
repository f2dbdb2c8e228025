"""Running many parameter sets of one graph, sharing and batching work.

All runs advance together, node by node in topological order:

- a node whose signature another run already computed is taken from the
  cache (the encoder runs once per distinct prompt, not once per seed);
- the remaining calls of a node that declares a ``batch`` function are merged
  into batched calls of at most ``batch_size``; results are split back per run;
- a call that fails fails only its own run (a failed batch is retried call by
  call, so the failure lands on the run that caused it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GraphValidationError, ParameterError, RunCancelledError
from .graph import Graph
from .planning import PlannedNode

if TYPE_CHECKING:
    from .engine import Engine, RunState


@dataclass
class RunOutcome:
    """One run of a sweep: its parameters, status, outputs and report."""

    index: int
    params: dict[str, Any]
    status: str = "pending"
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    error: str = ""
    report: Any = None

    attempts: int = 1
    worker: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = {"index": self.index, "params": self.params, "status": self.status,
                "seconds": round(self.seconds, 6), "files": self.files}
        if self.error:
            data["error"] = self.error
        if self.attempts != 1:
            data["attempts"] = self.attempts
        if self.worker:
            data["worker"] = self.worker
        if self.report is not None:
            data["outputs"] = self.report.outputs
            data["nodes"] = {n: r.status for n, r in self.report.nodes.items()}
        return data


def run_sweep(engine: "Engine", graph: Graph, param_sets: list[dict[str, Any]], *, batch_size: int = 8,
              seed: int | None = None, output_dir: str | Path | None = None,
              params_from_text: bool = False, run_indices: list[int] | None = None) -> list[RunOutcome]:
    """Run ``graph`` once per parameter set; a failing run never stops the others.

    ``run_indices`` are the runs' indices in the whole sweep (default: their positions here).
    """
    from .engine import RunState

    engine.check_output_dir(output_dir)  # a confined engine refuses an output folder outside its write roots
    outcomes = [RunOutcome(index, dict(params)) for index, params in enumerate(param_sets)]
    runs: list[tuple[RunOutcome, RunState]] = []
    cancel = threading.Event()
    for outcome in outcomes:
        run_index = run_indices[outcome.index] if run_indices is not None else outcome.index
        try:
            plan = engine.plan(graph, outcome.params, params_from_text=params_from_text, seed=seed,
                               output_dir=output_dir, run_index=run_index)
        except (ParameterError, GraphValidationError) as error:
            outcome.status, outcome.error = "failed", str(error)
            continue
        outcome.params = plan.params
        state = RunState(engine, plan, plan.seed, True, Path(output_dir) if output_dir else engine.output_dir,
                         cancel, run_index)
        runs.append((outcome, state))
    if not runs:
        return outcomes
    pending: dict[int, set[str]] = {}
    for outcome, state in runs:
        pending[outcome.index] = set(state.begin())
    blocked: dict[int, set[str]] = {outcome.index: set() for outcome, _ in runs}
    order = runs[0][1].plan.order
    try:
        for node_id in order:
            calls = []
            for outcome, state in runs:
                if node_id not in pending[outcome.index]:
                    continue
                node = state.plan.nodes[node_id]
                if any(source in blocked[outcome.index] for _, source, _, _ in node.links):
                    blocked[outcome.index].add(node_id)
                    state.report.nodes[node_id].status = "blocked"
                    continue
                calls.append((outcome, state, node))
            _run_calls(engine, calls, batch_size, blocked)
    except (KeyboardInterrupt, RunCancelledError):
        for outcome, state in runs:
            state.end("cancelled")
            outcome.status = "cancelled"
        raise
    for outcome, state in runs:
        result = state.end()
        outcome.report = state.report
        outcome.seconds = state.report.seconds
        outcome.files = list(state.report.files)
        if result is None:
            outcome.status = "failed"
            outcome.error = "; ".join(str(f) for f in state.failures)
        else:
            outcome.status, outcome.outputs = "ok", result.outputs
    return outcomes


def _run_calls(engine: "Engine", calls: list[tuple[RunOutcome, "RunState", PlannedNode]], batch_size: int,
               blocked: dict[int, set[str]]) -> None:
    """Run one node for every run that needs it: deduplicated, then batched where possible."""
    by_signature: dict[str, list[tuple[RunOutcome, "RunState", PlannedNode]]] = {}
    for call in calls:
        node = call[2]
        key = node.signature if not node.spec.volatile else f"{node.signature}:{call[0].index}"
        by_signature.setdefault(key, []).append(call)
    unique = []
    for group in by_signature.values():
        outcome, state, node = group[0]
        cached = state._cached(node)
        if cached is not None:
            for _, other, other_node in group:
                other.use_cached(other_node, cached)
            continue
        unique.append(group)
    spec = calls[0][2].spec if calls else None
    if spec is not None and spec.batch is not None and len(unique) > 1:
        for start in range(0, len(unique), max(1, batch_size)):
            _run_batch(engine, unique[start:start + batch_size], blocked)
        return
    for group in unique:
        _run_single(group, blocked)


def _share(group: list[tuple[RunOutcome, "RunState", PlannedNode]]) -> None:
    """Give the first run's fresh result to the other runs with the same signature."""
    first_state, first_node = group[0][1], group[0][2]
    outputs = first_state.values.get(first_node.id)
    for _, state, node in group[1:]:
        if outputs is None:
            blocked_error = RuntimeError(f"the same call failed in run {group[0][0].index}")
            state.fail(node, blocked_error, 0.0)
        else:
            state.use_cached(node, outputs)


def _run_single(group: list[tuple[RunOutcome, "RunState", PlannedNode]], blocked: dict[int, set[str]]) -> None:
    outcome, state, node = group[0]
    if not state._run_node(node):
        for failed_outcome, _, failed_node in group:
            blocked[failed_outcome.index].add(failed_node.id)
    _share(group)


def _run_batch(engine: "Engine", groups: list[list[tuple[RunOutcome, "RunState", PlannedNode]]],
               blocked: dict[int, set[str]]) -> None:
    firsts = [group[0] for group in groups]
    spec = firsts[0][2].spec
    try:
        started = [state.start(node) for _, state, node in firsts]
        arguments = [state.inputs_for(node) for _, state, node in firsts]
        results = spec.batch(arguments)  # type: ignore[misc]
        if len(results) != len(arguments):
            raise TypeError(f"{spec.id}'s batch function returned {len(results)} results for {len(arguments)} calls")
        seconds = engine.models.seconds_without_loads(min(started)) / len(firsts)
        for (_, state, node), result in zip(firsts, results):
            state.finish(node, result, seconds)
    except (KeyboardInterrupt, RunCancelledError):
        raise
    except Exception:  # noqa: BLE001 - retry call by call so the failure lands on its own run
        for group in groups:
            _run_single(group, blocked)
        return
    for group in groups:
        _share(group)
