"""The state of one run: its settings, values, report and events.

Everything that belongs to one run lives here and travels with it — never on
the shared :class:`Engine` — so that the runs of a sweep, or two jobs on one
engine, keep their own reports, model loads, event errors and cancellation.
The :class:`~sfumato.run.scheduler.Scheduler` decides what runs when; a
``RunState`` knows how to run one of its nodes and what that means for its
report.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NodeExecutionError, RunCancelledError
from ..plugin.context import RunContext, RunSettings
from ..plugin.events import (
    ACTIVE_RUN,
    ModelLoaded,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunEvent,
    RunFinished,
    RunStarted,
)
from ..plugin.paths import PathNotAllowedError, path_inputs
from .planning import Plan, PlannedNode
from .report import NodeRecord, NodeStatus, RunReport, RunResult, RunStatus, summarize_value

if TYPE_CHECKING:
    from .engine import Engine


class RunState:
    """One run of a plan on an engine.

    Args:
        engine: the engine whose caches, models and node instances the run uses.
        plan: what to run.
        keep_going: a failed node blocks only its descendants (else it stops the run).
        output_dir: where the run's nodes write.
        cancel_event: set to cancel (shared by the runs of one sweep).
        run_index: the run's position in its sweep (``None`` for a single run).
    """

    def __init__(self, engine: Engine, plan: Plan, *, keep_going: bool, output_dir: Path,
                 cancel_event: threading.Event, run_index: int | None = None) -> None:
        self.engine = engine
        self.plan = plan
        self.keep_going = keep_going
        self.run_id = uuid.uuid4().hex[:12]
        # Nodes see the expanded graph: an image stores it, so re-running it needs no subgraph file.
        self.settings = RunSettings(engine.device, engine.dtype, plan.seed, output_dir, plan.flat_graph,
                                    plan.params, cancel_event, engine.registry, engine.previews, engine.path_policy, run_index)
        self.report = RunReport(self.run_id, plan.graph.name, plan.params, plan.seed)
        self.report.warnings = [warning.as_dict() for warning in plan.warnings]
        self.values: dict[str, dict[str, Any]] = {}
        self.failures: list[NodeExecutionError] = []
        #: The nodes that must run (not cached), in plan order; set by :meth:`begin`.
        self.to_run: list[str] = []
        #: Nodes looked at by the walk from the targets (run, cached, or lazily added since).
        self._visited: set[str] = set()
        #: Sources of lazy inputs a node did not need -> why they do not run.
        self._untaken: dict[str, str] = {}
        self.started = 0.0
        self._lock = threading.Lock()
        #: The plugins' event hooks (fixed once the registry is loaded); observers are looked at per event.
        self._hooks = engine.registry.event_listeners()

    # -- events ------------------------------------------------------------------

    def _listened(self) -> bool:
        """Whether anyone receives events (observers, plugins' event hooks); else per-node events are not made."""
        return bool(self.engine.observers or self._hooks)

    def emit(self, event: RunEvent) -> None:
        """Deliver an event; errors of observers and plugin hooks go into this run's report."""
        for source, message in self.engine.emit(event):
            with self._lock:
                self.report.add_event_error(source, message)

    def note_model_event(self, event: RunEvent) -> None:
        """A model load or eviction one of this run's nodes caused: into the report, then delivered."""
        entry: dict[str, Any] = {"event": event.kind, "model": event.key}  # type: ignore[attr-defined]
        if isinstance(event, ModelLoaded):
            entry.update(seconds=round(event.seconds, 3), bytes=event.bytes)
        else:
            entry["reason"] = event.reason  # type: ignore[attr-defined]
        with self._lock:
            self.report.models.append(entry)
        self.emit(event)

    def _progress(self, node_id: str, node_type: str, current: int, total: int, message: str, preview: Any) -> None:
        self.emit(NodeProgress(self.run_id, node_id, node_type, current, total, message, preview))

    def _record_file(self, node_id: str, path: Path) -> None:
        with self._lock:
            self.report.files.append(str(path))

    # -- cache ---------------------------------------------------------------------

    def cached(self, node: PlannedNode) -> dict[str, Any] | None:
        """The node's outputs from the memory or disk cache, or ``None``."""
        if node.spec.volatile:
            return None
        engine = self.engine
        outputs = engine.memory.get(node.signature) if engine.memory is not None else None
        if outputs is None and engine.disk is not None:
            outputs = engine.disk.get(node.signature)
            if outputs is not None and engine.memory is not None:
                engine.memory.put(node.signature, outputs)
        if outputs is not None and node.spec.is_cache_entry_valid is not None:
            if not node.spec.is_cache_entry_valid(outputs):
                if engine.memory is not None:
                    engine.memory.discard(node.signature)
                return None
        return outputs

    def _store(self, node: PlannedNode, outputs: dict[str, Any]) -> None:
        if node.spec.volatile:
            return
        if self.engine.memory is not None:
            self.engine.memory.put(node.signature, outputs)
        if self.engine.disk is not None and node.spec.cacheable_to_disk:
            self.engine.disk.put(node.signature, outputs)

    # -- beginning and end ---------------------------------------------------------

    def begin(self) -> list[str]:
        """Set up the report, announce the run, and find the nodes that must run.

        Walking back from the targets, a node whose result is cached stops the
        walk, so its ancestors are not even looked up.
        """
        plan = self.plan
        self.started = time.perf_counter()
        graph_nodes = plan.flat_graph.nodes
        for node_id in graph_nodes:
            record = NodeRecord(graph_nodes[node_id].type)
            if node_id not in plan.nodes:
                record.reason = "feeds no output"
            self.report.nodes[node_id] = record
        self.emit(RunStarted(self.run_id, plan.graph.name, len(plan.order)))
        to_run = self._walk(plan.targets)
        for node_id in plan.order:
            if node_id not in self._visited:
                self.report.nodes[node_id].reason = "its consumers were cached"
        self.to_run = [node_id for node_id in plan.order if node_id in to_run]
        return self.to_run

    def _walk(self, starts: list[str]) -> set[str]:
        """Walk back from ``starts``: cached nodes take their result and stop the walk; returns the nodes to run.

        The lazy inputs of a node are not followed: what feeds them runs only
        when the node asks for it (:meth:`activate`).
        """
        nodes, visited = self.plan.nodes, self._visited
        to_run: set[str] = set()
        stack = list(starts)
        engine = self.engine
        # A fresh engine (a first run) has nothing to find: do not look every node up.
        lookup = engine.disk is not None or (engine.memory is not None and len(engine.memory) > 0)
        while stack:
            node_id = stack.pop()
            if node_id in visited:
                continue
            visited.add(node_id)
            node = nodes[node_id]
            cached = self.cached(node) if lookup else None
            if cached is not None:
                self.use_cached(node, cached)
                continue
            to_run.add(node_id)
            lazy = node.spec.lazy
            stack.extend(edge.source for edge in node.links if lazy is None or edge.input not in lazy.names)
        return to_run

    # -- lazy inputs ---------------------------------------------------------------

    def lazy_needed(self, node: PlannedNode) -> set[str]:
        """The lazy inputs ``node`` needs, asked of it with its literals and eager input values."""
        lazy = node.spec.lazy
        assert lazy is not None
        values = dict(node.literals)
        for edge in node.links:
            if edge.input not in lazy.names:
                value = self.values[edge.source][edge.output]
                values[edge.input] = edge.convert(value) if edge.convert is not None else value
        needed = set(lazy.needs(values))
        unknown = needed - set(lazy.names)
        if unknown:
            raise ValueError(f"{node.spec.id} asked for {sorted(unknown)}, which are not among its lazy inputs "
                             f"{list(lazy.names)}")
        for edge in node.links:
            if edge.input in lazy.names and edge.input not in needed:
                self._untaken.setdefault(edge.source, f"untaken branch: input {edge.input!r} of "
                                                      f"{node.id!r} ({node.spec.id}) was not needed")
        return needed

    def activate(self, sources: list[str]) -> list[str]:
        """Nodes a lazy input turned out to need: the ones to run now (cached ones are served), in plan order."""
        added = self._walk(sources)
        new = [node_id for node_id in self.plan.order if node_id in added]
        self.to_run.extend(new)
        for node_id in new:
            self._untaken.pop(node_id, None)
        return new

    def _report_untaken(self) -> None:
        """Say why the nodes behind untaken branches did not run (they stay ``skipped``), in the report and events."""
        records, nodes = self.report.nodes, self.plan.nodes
        stack = [(node_id, reason) for node_id, reason in self._untaken.items()]
        while stack:
            node_id, reason = stack.pop()
            record = records[node_id]
            if record.status != NodeStatus.SKIPPED or record.reason.startswith("untaken branch"):
                continue
            record.reason = reason
            self.emit(NodeSkipped(self.run_id, node_id, record.type, reason))
            stack.extend((edge.source, reason) for edge in nodes[node_id].links)

    def end(self, status: RunStatus | None = None) -> RunResult | None:
        """Close the run: status, timing, final event; the result when it succeeded."""
        self.report.seconds = time.perf_counter() - self.started
        if self._untaken:
            self._report_untaken()
        self.report.status = status or (RunStatus.FAILED if self.failures else RunStatus.OK)
        self.emit(RunFinished(self.run_id, str(self.report.status), self.report.seconds))
        if self.report.status != RunStatus.OK:
            # A keep_going run keeps what its finished branches made: the outputs whose node ran.
            self.report.outputs = {name: summarize_value(self.values[node][output])
                                   for name, (node, output) in self.plan.outputs.items()
                                   if output in self.values.get(node, {})}
            return None
        outputs = {name: self.values[node][output] for name, (node, output) in self.plan.outputs.items()}
        self.report.outputs = {name: summarize_value(value) for name, value in outputs.items()}
        return RunResult(outputs, self.report, self.values)

    # -- one node --------------------------------------------------------------------

    def inputs_for(self, node: PlannedNode) -> dict[str, Any]:
        """The keyword arguments of a node call: literals, upstream values, the context."""
        spec = node.spec
        kwargs = dict(node.literals)
        values = self.values
        lazy = spec.lazy
        for edge in node.links:
            if lazy is not None and edge.input in lazy.names and edge.source not in values:
                continue  # a lazy input the node did not need: it takes its default
            value = values[edge.source][edge.output]
            if edge.convert is not None:
                value = edge.convert(value)
            if edge.check is not None:
                problem = edge.check(value)
                if problem:
                    raise TypeError(f"input {edge.input!r} from {edge.source}.{edge.output}: {problem}")
            kwargs[edge.input] = value
        if self.settings.paths.restricted:
            self._check_paths(node, kwargs)
        if spec.context_param:
            # Volatile nodes are never cached, so they may read any run setting.
            keys = None if spec.volatile else frozenset(spec.context_keys)
            kwargs[spec.context_param] = RunContext(node.id, spec.id, self.settings, self.engine.models,
                                                    self._progress, self._record_file, keys)
        return kwargs

    def _check_paths(self, node: PlannedNode, kwargs: dict[str, Any]) -> None:
        """Check declared path inputs, whose values may only arrive now (over a link)."""
        for name, access in path_inputs(node.spec):
            value = kwargs.get(name)
            if isinstance(value, (str, os.PathLike)):
                problem = self.settings.paths.problem(value, access)
                if problem:
                    raise PathNotAllowedError(f"input {name!r}: {problem}")

    def start(self, node: PlannedNode) -> float:
        """Mark a node as started (cancellation check, event); returns the start time."""
        if self.settings.cancel_event.is_set():
            raise RunCancelledError(f"run cancelled before node {node.id!r}")
        if self.engine.observers or self._hooks:  # self._listened(), inlined: twice per node
            self.emit(NodeStarted(self.run_id, node.id, node.spec.id))
        return time.perf_counter()

    def finish(self, node: PlannedNode, result: Any, seconds: float) -> None:
        """Check and store a node's result."""
        outputs = self._outputs_of(node, result)
        self.values[node.id] = outputs
        self._store(node, outputs)
        record = self.report.nodes[node.id]
        record.status = NodeStatus.RAN
        record.seconds = seconds
        if self.engine.observers or self._hooks:  # self._listened(), inlined
            self.emit(NodeFinished(self.run_id, node.id, node.spec.id, seconds))

    def use_cached(self, node: PlannedNode, outputs: dict[str, Any]) -> None:
        """Take a node's result from the cache, or from another run of the same sweep."""
        self.values[node.id] = outputs
        self.report.nodes[node.id].status = NodeStatus.CACHED
        if self._listened():
            self.emit(NodeCached(self.run_id, node.id, node.spec.id))

    def block(self, node_id: str) -> None:
        """A node this one depends on failed: it will not run."""
        self.report.nodes[node_id].status = NodeStatus.BLOCKED

    def fail(self, node: PlannedNode, error: BaseException, seconds: float) -> NodeExecutionError:
        """Record a node failure; raises unless the run keeps going."""
        if isinstance(error, ImportError):
            # A plugin's declared optional dependency is missing: say which pip line fixes it.
            error = self.engine.registry.install_hint(node.spec.plugin, error) or error
        record = self.report.nodes[node.id]
        record.status = NodeStatus.FAILED
        record.seconds = seconds
        record.error = f"{type(error).__name__}: {error}"
        failure = NodeExecutionError(node.id, node.spec.id, error, self.report)
        failure.__cause__ = error
        failure.traceback = traceback.format_exc()  # type: ignore[attr-defined]
        self.emit(NodeFailed(self.run_id, node.id, node.spec.id, record.error))
        if not self.keep_going:
            raise failure from error
        with self._lock:
            self.failures.append(failure)
        return failure

    def run_node(self, node: PlannedNode) -> bool:
        """Run one node; returns False when it failed and the run keeps going."""
        models = self.engine.models
        started = self.start(node)
        token = ACTIVE_RUN.set(self)
        try:
            result = self.engine.node_callable(node)(**self.inputs_for(node))
            self.finish(node, result, models.seconds_without_loads(started))
        except (KeyboardInterrupt, RunCancelledError):
            record = self.report.nodes[node.id]
            record.status, record.error = NodeStatus.FAILED, "cancelled"
            raise
        except Exception as error:  # noqa: BLE001 - every node failure is reported the same way
            self.fail(node, error, models.seconds_without_loads(started))
            return False
        finally:
            ACTIVE_RUN.reset(token)
        return True

    def _outputs_of(self, node: PlannedNode, result: Any) -> dict[str, Any]:
        spec = node.spec
        if not spec.outputs:
            return {}
        if spec.single_output:
            (name,) = spec.outputs
            outputs = {name: result}
        elif isinstance(result, dict):
            missing = set(spec.outputs) - set(result)
            if missing:
                raise TypeError(f"{spec.id} returned no value for output(s) {sorted(missing)}")
            outputs = {name: result[name] for name in spec.outputs}
        elif isinstance(result, tuple) and len(result) == len(spec.outputs):
            outputs = dict(zip(spec.outputs, result))
        else:
            raise TypeError(f"{spec.id} must return a dict with keys {sorted(spec.outputs)}")
        for name, check in node.output_checks:
            problem = check(outputs[name])
            if problem:
                raise TypeError(f"{spec.id} returned a bad value for output {name!r}: {problem}")
        return outputs
