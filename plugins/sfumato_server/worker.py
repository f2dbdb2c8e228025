"""The single worker: runs queued jobs in order in one long-lived engine (models stay loaded).

The worker must never die silently, or jobs stay queued forever:

- a job that fails (bad graph, failing node, damaged row) is finished as failed with its reason;
- a locked database is waited out (the store retries with backoff) and shown on the health endpoint;
- anything else that escapes the loop is recorded and the loop starts again after a pause;
- if the thread itself ends anyway, :meth:`Worker.ensure_alive` (called by a watchdog) starts a new one.

With an executor (``sfumato serve --executor ray``) the worker still claims
each job from the queue and records how it ended; only the graph's runs go to
the executor, after this process's confined engine planned them again (the
queue stays the source of truth, and no path the server refuses is run).
"""

from __future__ import annotations

import base64
import io
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from sfumato import Engine, Graph, RunCancelledError, RunEvent, SfumatoError

from .events import EventHub
from .jobspec import RequestError, parse_sweep
from .policy import PolicyError, ServerPolicy, job_texts, strip_graph, strip_texts
from .store import Job, JobStore

#: Longest pause before the loop starts again after an unexpected error.
MAX_RESTART_PAUSE_S = 5.0
#: How often an idle worker deletes jobs older than the policy's ``keep_days``.
CLEANUP_EVERY_S = 600.0


class Worker:
    """Claims jobs one at a time in a thread; a job's failure never stops the worker."""

    def __init__(self, store: JobStore, hub: EventHub, outputs: Path, engine: Engine, *,
                 max_sweep_runs: int = 256, run_options: dict[str, Any] | None = None,
                 policy: ServerPolicy | None = None, executor: Any = None) -> None:
        self.store, self.hub, self.outputs, self.engine = store, hub, outputs, engine
        #: Where jobs' runs execute: None for this process's engine, else an executor from the registry.
        self.executor = executor
        #: Called with a job's id once it has ended and its end is recorded (webhooks).
        self.on_job_end: list[Callable[[int], None]] = []
        #: Screening, watermarking, signing and retention applied to every job (``--policy``).
        self.policy = policy or ServerPolicy()
        self._policy_engine: Engine | None = None
        self._next_cleanup = 0.0
        self.max_sweep_runs = max_sweep_runs
        #: Extra keyword arguments for every ``Engine.run`` / ``run_many`` call.
        self.run_options = dict(run_options or {})
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: tuple[int, threading.Event] | None = None
        self._job_id: int | None = None
        self.thread: threading.Thread | None = None
        #: What the worker is doing, for ``GET /api/health``.
        self.state = "not started"
        self.restarts = 0
        self.last_error: str | None = None
        self.heartbeat = time.monotonic()
        self._start_lock = threading.Lock()
        engine.observers.append(self._forward)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (once; see :meth:`ensure_alive` for restarts)."""
        with self._start_lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="sfumato-worker", daemon=True)
                self.thread.start()

    def ensure_alive(self) -> bool:
        """Start a new thread if the worker's thread has ended; True when it had to."""
        if self.stopping.is_set() or self.thread is None or self.thread.is_alive():
            return False
        self.restarts += 1
        self.state = "restarting"
        self.start()
        return True

    def stop(self) -> None:
        """Ask the thread to end after the current job."""
        self.stopping.set()
        self.wake.set()

    def health(self) -> dict[str, Any]:
        """The worker's state for the health endpoint."""
        alive = self.thread is not None and self.thread.is_alive()
        waiting = self.thread is not None and self.store.waiting_for_lock(self.thread)
        state = "waiting for the database (locked by another program)" if waiting else self.state
        return {"alive": alive, "state": state, "waiting_for_database": waiting, "job": self._job_id,
                "restarts": self.restarts, "last_error": self.last_error,
                # How long since the loop last looked for a job (long while a job runs).
                "seconds_since_heartbeat": round(time.monotonic() - self.heartbeat, 3)}

    def _loop(self) -> None:
        pause = 0.1
        while not self.stopping.is_set():
            try:
                self.heartbeat = time.monotonic()
                self.state = "idle"
                if time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + CLEANUP_EVERY_S
                    self.policy.cleanup(self.store, self.outputs)
                job = self.store.claim_next()
                if job is None:
                    self.wake.wait(timeout=0.5)
                    self.wake.clear()
                    continue
                self.state = f"running job {job.id}"
                self.execute(job)
                pause = 0.1
            except Exception as error:  # noqa: BLE001 - recorded, shown on /api/health, then the loop restarts
                self.last_error = f"{type(error).__name__}: {error}"
                self.restarts += 1
                self.state = "restarting after an error"
                self.stopping.wait(pause)
                pause = min(pause * 2, MAX_RESTART_PAUSE_S)
        self.state = "stopped"

    # -- events ---------------------------------------------------------------------------

    def _forward(self, event: RunEvent) -> None:
        data: dict[str, Any] = {"job": self._job_id, "type": event.kind}
        for key in ("node_id", "node_type", "current", "total", "seconds", "error", "key", "status"):
            if hasattr(event, key):
                data[key] = getattr(event, key)
        preview = getattr(event, "preview", None)
        if preview is not None and hasattr(preview, "save"):
            buffer = io.BytesIO()
            preview.save(buffer, format="PNG")
            data["preview"] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        self.hub.publish(data)

    def cancel(self, job_id: int) -> bool:
        """Ask the running job to stop; False when ``job_id`` is not the one running."""
        current = self.current
        if self.executor is not None:
            return False  # a run on an executor's worker cannot be stopped from here
        if current is not None and current[0] == job_id:
            current[1].set()
            return True
        return False

    # -- running one job --------------------------------------------------------------------

    def execute(self, job: Job) -> None:
        """Run one claimed job and record how it ended (always: done, failed or cancelled)."""
        folder = self.outputs / str(job.id)
        cancel = threading.Event()
        self.current, self._job_id = (job.id, cancel), job.id
        try:
            if job.damaged:
                self.store.finish(job.id, "failed", error=f"the queue row of this job is damaged ({job.damaged}); "
                                                          "it cannot run")
                return
            # A job re-run after a crash starts from a clean folder: its outputs exist once.
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            self.hub.publish({"job": job.id, "type": "job_started", "attempt": job.attempts})
            self._run(job, folder, cancel)
            if self.policy.strip_prompts:
                self._strip(job)
        finally:
            self.current, self._job_id = None, None
            final = self.store.get(job.id)
            self.hub.publish({"job": job.id, "type": f"job_{final.status if final else 'failed'}",
                              "error": final.error if final else None})
            for callback in self.on_job_end:
                callback(job.id)

    def _run(self, job: Job, folder: Path, cancel: threading.Event) -> None:
        options = self.run_options
        try:
            # The policy comes first: a refused text fails the job before any of its nodes runs.
            flagged = self.policy.screen_texts(self.engine, job_texts(job.graph, job.params, job.sweep))
            graph = Graph.from_dict(self.policy.apply_to_graph(job.graph), source=f"job {job.id}")
            sweep = parse_sweep(job.sweep, max_runs=self.max_sweep_runs)
            if self.policy.guards_images:
                first = next(iter(sweep.param_sets(job.params))) if sweep is not None else job.params
                self.policy.check_reach(self.engine.plan(graph, first, output_dir=folder).nodes, job.graph)
            if self.executor is not None:
                files, report, status, error = self._run_on_executor(graph, job, sweep, folder)
            elif sweep is not None:
                param_sets = list(sweep.param_sets(job.params))
                outcomes = self.engine.run_many(graph, param_sets, output_dir=folder, cancel_event=cancel, **options)
                files = [f for o in outcomes for f in o.files]
                report = {"runs": [o.as_dict() for o in outcomes]}
                failed = [o for o in outcomes if o.status != "ok"]
                status, error = ("done", None) if not failed else \
                    ("failed", f"{len(failed)} of {len(outcomes)} runs failed")
            else:
                # keep_going: independent branches finish after one fails, and the job keeps their outputs.
                keep_going = bool(job.options.get("keep_going"))
                result = self.engine.run(graph, job.params, output_dir=folder, cancel_event=cancel,
                                         keep_going=keep_going, **options)
                files, report, status, error = list(result.report.files), result.report.as_dict(), "done", None
            unreached = self.policy.remove_unreached(folder, files)
            if unreached:
                raise PolicyError(f"{len(unreached)} image(s) were saved by a graph run inside a node (such as "
                                  f"flow.map), out of reach of this server's screening and watermark; they were "
                                  f"deleted: {', '.join(p.name for p in unreached[:5])}")
            if self.policy.sign is not None:
                self.policy.sign_files(self._signing_engine(), files)
            if flagged:
                report["policy"] = {"flagged_texts": list(flagged.values())}
            self.store.finish(job.id, status, error=error, report=report, outputs=_relative(files, self.outputs))
        except (RunCancelledError, KeyboardInterrupt):
            self.store.finish(job.id, "cancelled", error="cancelled while running")
        except RequestError as problem:
            self.store.finish(job.id, "failed", error=problem.message)
        except SfumatoError as problem:
            ran = getattr(problem, "report", None)
            report = ran.as_dict() if ran is not None else None
            # The files that finished branches wrote stay the job's (a keep_going run's partial result).
            written = [f for f in (ran.files if ran is not None else []) if Path(f).is_file()]
            self.policy.remove_unreached(folder, written)  # the policy's reach holds for a partial result too
            self.store.finish(job.id, "failed", error=str(problem), report=report,
                              outputs=_relative(written, self.outputs))
        except Exception as problem:  # noqa: BLE001 - one bad job must not stop the worker
            self.store.finish(job.id, "failed", error=f"{type(problem).__name__}: {problem}\n{traceback.format_exc()}")

    def _run_on_executor(self, graph: Graph, job: Job, sweep: Any, folder: Path
                         ) -> tuple[list[str], dict[str, Any], str, str | None]:
        """Run the job's runs on the executor; its files, report, status and error.

        Each run is planned here first by the server's own engine, whose path
        policy confines what a job reads and writes: a run the server would
        refuse never reaches a worker.
        """
        param_sets = list(sweep.param_sets(job.params)) if sweep is not None else [job.params]
        for params in param_sets:
            self.engine.plan(graph, params, output_dir=folder)
        outcomes = self.executor.run_many(graph, param_sets, output_dir=folder)
        files = [f for o in outcomes for f in o.files]
        failed = [o for o in outcomes if o.status != "ok"]
        if sweep is not None:
            report = {"runs": [o.as_dict() for o in outcomes]}
            error = f"{len(failed)} of {len(outcomes)} runs failed" if failed else None
        else:
            [outcome] = outcomes
            # A run on an executor keeps going past a failed node, so its report has what finished.
            report = outcome.report.as_dict() if outcome.report is not None else {"params": outcome.params}
            report["worker"] = outcome.worker
            error = outcome.error or None
        return files, report, ("failed" if failed else "done"), error

    def _signing_engine(self) -> Engine:
        if self._policy_engine is None:
            self._policy_engine = self.policy.signing_engine(self.outputs)
        return self._policy_engine

    def _strip(self, job: Job) -> None:
        """Replace the ended job's texts (``--strip-prompts``); its report keeps statuses and numbers."""
        ended = self.store.get(job.id)
        report = ended.report if ended is not None else None
        if report is not None:
            for run in [report, *report.get("runs", [])]:
                for key in ("params", "outputs"):
                    if isinstance(run.get(key), dict):
                        run[key] = strip_texts(run[key])
        self.store.replace_texts(job.id, graph=strip_graph(job.graph), params=strip_texts(job.params),
                                 sweep=strip_texts(job.sweep) if job.sweep else None, report=report)


def _relative(files: list[str], root: Path) -> list[str]:
    return [str(Path(f).resolve().relative_to(root.resolve())) for f in files]
