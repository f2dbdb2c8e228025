"""The engine: what a user of the Python API holds.

An :class:`Engine` keeps what outlives a run — caches, loaded models, class
nodes' instances, observers — and turns calls into runs: :meth:`Engine.run`
one, :meth:`Engine.run_many` a sweep. Each run's own state is a
:class:`~sfumato.run.run_state.RunState`; all of them are executed by the one
:class:`~sfumato.run.scheduler.Scheduler`, so a single run, ``jobs > 1``, a
sweep's shared and batched calls, and cancellation behave the same way.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import GraphValidationError, NodeExecutionError, ParameterError, RunCancelledError, RunFailedError
from ..graph.document import Graph
from ..plugin.devices import check_device_name, check_dtype_name
from ..plugin.events import ACTIVE_RUN, RunEvent
from ..plugin.paths import PathNotAllowedError, PathPolicy
from ..registry import Registry, default_registry
from ..store.cache import DiskCache, MemoryCache
from ..store.models import ModelManager
from .planning import Plan, PlannedNode, plan_run
from .report import RunOutcome, RunResult, RunStatus
from .run_state import RunState
from .scheduler import Scheduler


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
        """A model load or eviction: credited to the run whose node caused it, if any."""
        run = ACTIVE_RUN.get()
        if run is not None and run.engine is self:
            run.note_model_event(event)
        else:
            self.emit(event)

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
        run = RunState(self, plan, keep_going=keep_going, output_dir=self._output_dir(output_dir),
                       cancel_event=cancel_event or threading.Event())
        try:
            self._schedule([run], batch_size=1)
        except NodeExecutionError as error:
            error.report = run.report
            run.end(RunStatus.FAILED)
            raise
        result = run.end()
        if result is None:
            raise RunFailedError(run.failures, run.report)
        return result

    def run_many(self, graph: Graph, param_sets: list[dict[str, Any]], *, batch_size: int = 8,
                 seed: int | None = None, output_dir: str | Path | None = None, params_from_text: bool = False,
                 run_indices: list[int] | None = None, cancel_event: threading.Event | None = None,
                 ) -> list[RunOutcome]:
        """Run ``graph`` once per parameter set (a sweep), sharing and batching work.

        All runs go to one schedule: work that does not depend on the swept
        values runs once (the encoder once per distinct prompt), and nodes with
        a ``batch`` function process up to ``batch_size`` runs per call. A
        failing run is reported in its outcome and never stops the others;
        setting ``cancel_event`` cancels them all. Each run knows its index in
        the sweep (``run_indices``, default 0, 1, ...; an executor sending part
        of a sweep passes the part's own), which savers put in file names.
        """
        self.check_output_dir(output_dir)  # a confined engine refuses an output folder outside its write roots
        cancel_event = cancel_event or threading.Event()
        outcomes = [RunOutcome(index, dict(params)) for index, params in enumerate(param_sets)]
        runs: list[tuple[RunOutcome, RunState]] = []
        for outcome in outcomes:
            run_index = run_indices[outcome.index] if run_indices is not None else outcome.index
            try:
                plan = self.plan(graph, outcome.params, params_from_text=params_from_text, seed=seed,
                                 output_dir=output_dir, run_index=run_index)
            except (ParameterError, GraphValidationError) as error:
                outcome.status, outcome.error = RunStatus.FAILED, str(error)
                continue
            outcome.params = plan.params
            runs.append((outcome, RunState(self, plan, keep_going=True, output_dir=self._output_dir(output_dir),
                                           cancel_event=cancel_event, run_index=run_index)))
        if runs:
            self._schedule([run for _, run in runs], batch_size=batch_size)
        for outcome, run in runs:
            result = run.end()
            outcome.report = run.report
            outcome.seconds = run.report.seconds
            outcome.files = list(run.report.files)
            if result is None:
                outcome.status = RunStatus.FAILED
                outcome.error = "; ".join(str(failure) for failure in run.failures)
            else:
                outcome.status, outcome.outputs = RunStatus.OK, result.outputs
        return outcomes

    def _schedule(self, runs: list[RunState], *, batch_size: int) -> None:
        """Begin ``runs`` and execute them in one schedule; a cancelled schedule ends them all as cancelled."""
        cancel_event = runs[0].settings.cancel_event
        try:
            for run in runs:
                run.begin()
            Scheduler(runs, jobs=self.jobs, batch_size=batch_size, cancel_event=cancel_event).run()
        except (KeyboardInterrupt, RunCancelledError):
            cancel_event.set()
            for run in runs:
                run.end(RunStatus.CANCELLED)
            raise

    def _output_dir(self, output_dir: str | Path | None) -> Path:
        return Path(output_dir) if output_dir else self.output_dir

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
