"""The engine: runs a validated plan, reusing cached results where it can.

Execution is pulled from the targets (graph outputs and side-effect nodes):
walking back from them, a node whose result is cached stops the walk, so its
ancestors are not even looked up. What remains runs in topological order, one
node at a time or, with ``jobs > 1``, as soon as its inputs are ready.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .cache import DiskCache, MemoryCache
from .context import RunContext, RunSettings
from .devices import check_device_name, check_dtype_name
from .errors import NodeExecutionError, RunCancelledError, RunFailedError
from .events import ModelLoaded, NodeCached, NodeFailed, NodeFinished, NodeProgress, NodeStarted, RunEvent, RunFinished, RunStarted
from .graph import Graph
from .models import ModelManager
from .paths import PathNotAllowedError, PathPolicy, path_inputs
from .planning import Plan, PlannedNode, plan_run
from .registry import Registry, default_registry
from .sweep_runner import RunOutcome
from .report import BLOCKED, CACHED, FAILED, RAN, NodeRecord, RunReport, summarize_value


@dataclass
class RunResult:
    """What :meth:`Engine.run` returns: the graph outputs and the run report."""

    outputs: dict[str, Any]
    report: RunReport
    values: dict[str, dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]


class Engine:
    """Runs graphs; keeps caches, loaded models and stateful node instances between runs.

    Args:
        registry: node types and plugins (default: the installed plugins).
        cache: keep results in memory between runs of this engine.
        cache_dir: also keep results on disk, across processes.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
        output_dir: where nodes write files.
        jobs: how many independent nodes may run at once.
        max_memory: model memory budget per device kind, in bytes (``{"cpu": ..., "cuda": ...}``).
        observers: callables that receive every :class:`RunEvent`.
        previews: ask nodes for preview images with their progress events (for live displays).
        path_policy: where nodes may read and write files (:class:`PathPolicy`). The default
            allows everything, as on the user's own machine; a server passes
            ``PathPolicy.confined(read=[...], write=[data_folder])``. Literal paths outside it
            are validation issues from :meth:`plan`; paths arriving at run time fail their node.
    """

    #: How many observer and plugin event-hook errors :attr:`event_errors` keeps (the newest).
    MAX_EVENT_ERRORS = 100

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        output_dir: str | Path = "out",
        jobs: int = 1,
        max_memory: dict[str, int] | None = None,
        observers: Iterable[Callable[[RunEvent], None]] = (),
        previews: bool = False,
        path_policy: PathPolicy | None = None,
    ) -> None:
        self.registry = registry or default_registry()
        self.memory = MemoryCache() if cache else None
        self.disk = DiskCache(cache_dir, codecs=self.registry.codecs) if cache and cache_dir else None
        self.device = check_device_name(device)
        self.dtype = check_dtype_name(dtype)
        self.output_dir = Path(output_dir)
        self.jobs = max(1, int(jobs))
        self.previews = previews
        self.path_policy = path_policy or PathPolicy()
        self.observers: list[Callable[[RunEvent], None]] = list(observers)
        self.models = ModelManager(sources=self.registry.models, max_bytes=dict(max_memory or {}),
                                   emit=self._model_event, path_policy=self.path_policy)
        #: The report of the run in progress, which model loads and evictions are added to.
        self.current_report: RunReport | None = None
        self._callables: dict[str, Callable[..., Any]] = {}
        self._callables_lock = threading.Lock()
        #: The newest errors raised by observers and plugins' event hooks ("source: error").
        self.event_errors: deque[str] = deque(maxlen=self.MAX_EVENT_ERRORS)

    # -- events ----------------------------------------------------------------

    def emit(self, event: RunEvent) -> list[tuple[str, str]]:
        """Deliver an event to observers and plugins; their errors never stop a run.

        Returns the errors raised, as ``(source, error)`` pairs (the source names
        the plugin), so that the run they belong to can report them.
        """
        errors: list[tuple[str, str]] = []
        for observer in self.observers:
            try:
                observer(event)
            except Exception as error:  # noqa: BLE001
                errors.append((f"observer {getattr(observer, '__qualname__', observer)}",
                               f"{type(error).__name__}: {error}"))
        for plugin, hook in self.registry.event_listeners():
            try:
                hook(event=event)
            except Exception as error:  # noqa: BLE001
                errors.append((f"plugin {plugin!r} (sfumato_run_event)", f"{type(error).__name__}: {error}"))
        for source, message in errors:
            self.event_errors.append(f"{source}: {message}")
        return errors

    def _model_event(self, event: RunEvent) -> None:
        report = self.current_report
        if report is not None:
            entry = {"event": event.kind, "model": event.key}  # type: ignore[attr-defined]
            entry.update({"seconds": round(event.seconds, 3), "bytes": event.bytes} if isinstance(event, ModelLoaded)
                         else {"reason": event.reason})  # type: ignore[attr-defined]
            report.models.append(entry)
        errors = self.emit(event)
        if report is not None:
            for source, message in errors:
                report.add_event_error(source, message)

    # -- running -----------------------------------------------------------------

    def plan(self, graph: Graph, params: dict[str, Any] | None = None, *, params_from_text: bool = False,
             seed: int | None = None, output_dir: str | Path | None = None, run_index: int | None = None) -> Plan:
        """Validate and plan ``graph`` (raises GraphValidationError / ParameterError).

        Literal paths that the engine's path policy refuses are validation issues.
        ``run_index`` is the run's position in a sweep (``None`` for a single run).
        """
        run_context = {"device": self.device, "dtype": self.dtype,
                       "output_dir": str(Path(output_dir or self.output_dir).resolve()),
                       "path_policy": self.path_policy, "run_index": "" if run_index is None else run_index}
        return plan_run(graph, self.registry, params, params_from_text=params_from_text, seed=seed,
                        run_context=run_context)

    def run(
        self,
        graph: Graph,
        params: dict[str, Any] | None = None,
        *,
        seed: int | None = None,
        keep_going: bool = False,
        output_dir: str | Path | None = None,
        params_from_text: bool = False,
        cancel_event: threading.Event | None = None,
        **more_params: Any,
    ) -> RunResult:
        """Run ``graph`` with parameter values; return outputs and the report.

        Raises :class:`NodeExecutionError` when a node fails (its ``report``
        holds the run so far), or :class:`RunFailedError` after a
        ``keep_going`` run with failures.
        """
        all_params = {**(params or {}), **more_params}
        plan = self.plan(graph, all_params, params_from_text=params_from_text, seed=seed, output_dir=output_dir)
        return self.execute(plan, keep_going=keep_going, output_dir=output_dir, cancel_event=cancel_event)

    def execute(self, plan: Plan, *, keep_going: bool = False, output_dir: str | Path | None = None,
                cancel_event: threading.Event | None = None) -> RunResult:
        """Run an already made plan (made with the same ``output_dir``)."""
        self.check_output_dir(output_dir)
        run = RunState(self, plan, plan.seed, keep_going, Path(output_dir) if output_dir else self.output_dir,
                       cancel_event or threading.Event())
        return run.go()

    def run_many(self, graph: Graph, param_sets: list[dict[str, Any]], *, batch_size: int = 8,
                 seed: int | None = None, output_dir: str | Path | None = None,
                 params_from_text: bool = False, run_indices: list[int] | None = None) -> list["RunOutcome"]:
        """Run ``graph`` once per parameter set (a sweep), sharing and batching work.

        Work that does not depend on the swept values runs once; nodes with a
        ``batch`` function process up to ``batch_size`` runs per call. A failing
        run is reported in its outcome and never stops the others. Each run
        knows its index in the sweep (``run_indices``, default 0, 1, ...;
        an executor sending part of a sweep passes the parts' own), which
        savers put in file names.
        """
        from .sweep_runner import run_sweep

        return run_sweep(self, graph, param_sets, batch_size=batch_size, seed=seed, output_dir=output_dir,
                         params_from_text=params_from_text, run_indices=run_indices)

    def check_output_dir(self, output_dir: str | Path | None = None) -> None:
        """Raise :class:`PathNotAllowedError` when the path policy forbids writing the output folder."""
        if self.path_policy.restricted:
            problem = self.path_policy.problem(output_dir or self.output_dir, "write")
            if problem:
                raise PathNotAllowedError(f"output folder: {problem}")

    def node_callable(self, node: PlannedNode) -> Callable[..., Any]:
        """The function that runs a node; class nodes keep one instance per engine."""
        function = self._callables.get(node.spec.id)
        if function is None:
            with self._callables_lock:
                function = self._callables.get(node.spec.id)
                if function is None:
                    function = node.spec.make_callable()
                    self._callables[node.spec.id] = function
        return function

    def clear_cache(self) -> None:
        if self.memory is not None:
            self.memory.clear()


class RunState:
    """The state of one run of a plan."""

    def __init__(self, engine: Engine, plan: Plan, seed: int, keep_going: bool, output_dir: Path,
                 cancel_event: threading.Event, run_index: int | None = None) -> None:
        self.engine = engine
        self.plan = plan
        self.keep_going = keep_going
        self.run_id = uuid.uuid4().hex[:12]
        self.settings = RunSettings(engine.device, engine.dtype, seed, output_dir, plan.graph, plan.params,
                                    cancel_event, engine.registry, engine.previews, engine.path_policy, run_index)
        self.report = RunReport(self.run_id, plan.graph.name, plan.params, seed)
        self.values: dict[str, dict[str, Any]] = {}
        self.failures: list[NodeExecutionError] = []
        self._lock = threading.Lock()
        engine.models.run_id = self.run_id

    # -- helpers -------------------------------------------------------------------

    def emit(self, event: RunEvent) -> None:
        """Deliver an event; errors of observers and plugin hooks go into this run's report."""
        for source, message in self.engine.emit(event):
            with self._lock:
                self.report.add_event_error(source, message)

    def _progress(self, node_id: str, node_type: str, current: int, total: int, message: str, preview: Any) -> None:
        self.emit(NodeProgress(self.run_id, node_id, node_type, current, total, message, preview))

    def _record_file(self, node_id: str, path: Path) -> None:
        with self._lock:
            self.report.files.append(str(path))

    def _cached(self, node: PlannedNode) -> dict[str, Any] | None:
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

    def _select(self) -> list[str]:
        """Walk back from the targets; return the nodes that must run, in order."""
        nodes = self.plan.nodes
        to_run: set[str] = set()
        visited: set[str] = set()
        stack = list(self.plan.targets)
        while stack:
            node_id = stack.pop()
            if node_id in visited:
                continue
            visited.add(node_id)
            node = nodes[node_id]
            cached = self._cached(node)
            if cached is not None:
                self.values[node_id] = cached
                self.report.nodes[node_id].status = CACHED
                self.emit(NodeCached(self.run_id, node_id, node.spec.id))
                continue
            to_run.add(node_id)
            stack.extend(source for _, source, _, _ in node.links)
        for node_id in self.plan.order:
            if node_id not in visited:
                self.report.nodes[node_id].reason = "its consumers were cached"
        return [node_id for node_id in self.plan.order if node_id in to_run]

    # -- execution -------------------------------------------------------------------

    def begin(self) -> list[str]:
        """Set up the report, announce the run, and return the nodes that must run."""
        plan = self.plan
        self.started = time.perf_counter()
        for node_id in plan.graph.nodes:
            record = NodeRecord(plan.graph.nodes[node_id].type)
            if node_id not in plan.nodes:
                record.reason = "feeds no output"
            self.report.nodes[node_id] = record
        self.engine.current_report = self.report
        self.emit(RunStarted(self.run_id, plan.graph.name, len(plan.order)))
        return self._select()

    def end(self, status: str | None = None) -> RunResult | None:
        """Close the run: status, timing, final event; the result when it succeeded."""
        self.report.seconds = time.perf_counter() - self.started
        self.report.status = status or ("failed" if self.failures else "ok")
        if self.engine.current_report is self.report:
            self.engine.current_report = None
        self.emit(RunFinished(self.run_id, self.report.status, self.report.seconds))
        if self.report.status != "ok":
            return None
        outputs = {name: self.values[node][output] for name, (node, output) in self.plan.outputs.items()}
        self.report.outputs = {name: summarize_value(value) for name, value in outputs.items()}
        return RunResult(outputs, self.report, self.values)

    def go(self) -> RunResult:
        try:
            to_run = self.begin()
            if self.engine.jobs > 1 and len(to_run) > 1:
                self._run_parallel(to_run)
            else:
                self._run_sequential(to_run)
        except (KeyboardInterrupt, RunCancelledError):
            self.settings.cancel_event.set()
            self.end("cancelled")
            raise
        except NodeExecutionError as error:
            error.report = self.report
            self.end("failed")
            raise
        result = self.end()
        if result is None:
            raise RunFailedError(self.failures, self.report)
        return result

    def _run_sequential(self, to_run: list[str]) -> None:
        blocked: set[str] = set()
        for node_id in to_run:
            node = self.plan.nodes[node_id]
            if any(source in blocked for _, source, _, _ in node.links):
                blocked.add(node_id)
                self.report.nodes[node_id].status = BLOCKED
                continue
            if not self._run_node(node):
                blocked.add(node_id)

    def _run_parallel(self, to_run: list[str]) -> None:
        pending = set(to_run)
        waiting_on = {
            node_id: {s for _, s, _, _ in self.plan.nodes[node_id].links if s in pending} for node_id in to_run
        }
        consumers: dict[str, list[str]] = {node_id: [] for node_id in to_run}
        for node_id, sources in waiting_on.items():
            for source in sources:
                consumers[source].append(node_id)
        blocked: set[str] = set()
        order_index = {node_id: i for i, node_id in enumerate(to_run)}
        with ThreadPoolExecutor(max_workers=self.engine.jobs, thread_name_prefix="sfumato-node") as pool:
            running: dict[Future[bool], str] = {}

            def launch_ready() -> None:
                ready = sorted((n for n in pending if not waiting_on[n] and n not in running.values()),
                               key=order_index.__getitem__)
                for node_id in ready:
                    if len(running) >= self.engine.jobs:
                        break
                    running[pool.submit(self._run_node, self.plan.nodes[node_id])] = node_id

            launch_ready()
            while running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    node_id = running.pop(future)
                    pending.discard(node_id)
                    try:
                        ok = future.result()
                    except BaseException:
                        self.settings.cancel_event.set()
                        for other in running:
                            other.cancel()
                        raise
                    for consumer in consumers[node_id]:
                        waiting_on[consumer].discard(node_id)
                        if not ok:
                            self._block(consumer, consumers, pending, blocked)
                launch_ready()

    def _block(self, node_id: str, consumers: dict[str, list[str]], pending: set[str], blocked: set[str]) -> None:
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in blocked:
                continue
            blocked.add(current)
            pending.discard(current)
            self.report.nodes[current].status = BLOCKED
            stack.extend(consumers[current])

    def inputs_for(self, node: PlannedNode) -> dict[str, Any]:
        """The keyword arguments of a node call: literals, upstream values, the context."""
        spec = node.spec
        kwargs = dict(node.literals)
        ports = self.engine.registry.ports
        for name, source, output, convert in node.links:
            value = self.values[source][output]
            if convert is not None:
                value = convert(value)
            problem = ports.get(spec.inputs[name].port).problem_with(value)
            if problem:
                raise TypeError(f"input {name!r} from {source}.{output}: {problem}")
            kwargs[name] = value
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
        self.emit(NodeStarted(self.run_id, node.id, node.spec.id))
        return time.perf_counter()

    def finish(self, node: PlannedNode, result: Any, seconds: float) -> None:
        """Check and store a node's result."""
        outputs = self._outputs_of(node, result)
        self.values[node.id] = outputs
        self._store(node, outputs)
        record = self.report.nodes[node.id]
        record.status = RAN
        record.seconds = seconds
        self.emit(NodeFinished(self.run_id, node.id, node.spec.id, seconds))

    def use_cached(self, node: PlannedNode, outputs: dict[str, Any]) -> None:
        """Take a result another run of the same sweep just computed."""
        self.values[node.id] = outputs
        self.report.nodes[node.id].status = CACHED
        self.emit(NodeCached(self.run_id, node.id, node.spec.id))

    def fail(self, node: PlannedNode, error: BaseException, seconds: float) -> NodeExecutionError:
        """Record a node failure; raises unless the run keeps going."""
        if isinstance(error, ImportError):
            # A plugin's declared optional dependency is missing: say which pip line fixes it.
            error = self.engine.registry.install_hint(node.spec.plugin, error) or error
        record = self.report.nodes[node.id]
        record.status = FAILED
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

    def _run_node(self, node: PlannedNode) -> bool:
        """Run one node; returns False when it failed and the run keeps going."""
        started = self.start(node)
        try:
            result = self.engine.node_callable(node)(**self.inputs_for(node))
            self.finish(node, result, self.engine.models.seconds_without_loads(started))
        except (KeyboardInterrupt, RunCancelledError):
            record = self.report.nodes[node.id]
            record.status, record.error = FAILED, "cancelled"
            raise
        except Exception as error:  # noqa: BLE001 - every node failure is reported the same way
            self.fail(node, error, self.engine.models.seconds_without_loads(started))
            return False
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
        ports = self.engine.registry.ports
        for name, value in outputs.items():
            problem = ports.get(spec.outputs[name].port).problem_with(value)
            if problem:
                raise TypeError(f"{spec.id} returned a bad value for output {name!r}: {problem}")
        return outputs
