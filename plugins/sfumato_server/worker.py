"""The single worker: runs queued jobs in order in one long-lived engine (models stay loaded)."""

from __future__ import annotations

import base64
import io
import shutil
import threading
import traceback
from pathlib import Path
from typing import Any

from sfumato import Engine, Graph, RunCancelledError, RunEvent, SfumatoError

from .events import EventHub
from .store import Job, JobStore


class Worker(threading.Thread):
    """Claims jobs one at a time; a job's failure never stops the worker."""

    def __init__(self, store: JobStore, hub: EventHub, outputs: Path, engine: Engine) -> None:
        super().__init__(name="sfumato-worker", daemon=True)
        self.store, self.hub, self.outputs, self.engine = store, hub, outputs, engine
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: tuple[int, threading.Event] | None = None
        self._job_id: int | None = None
        engine.observers.append(self._forward)

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
        current = self.current
        if current is not None and current[0] == job_id:
            current[1].set()
            return True
        return False

    def run(self) -> None:
        while not self.stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                self.wake.wait(timeout=0.5)
                self.wake.clear()
                continue
            self.execute(job)

    def execute(self, job: Job) -> None:
        folder = self.outputs / str(job.id)
        # A job re-run after a crash starts from a clean folder: its outputs exist once.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        cancel = threading.Event()
        self.current, self._job_id = (job.id, cancel), job.id
        self.hub.publish({"job": job.id, "type": "job_started", "attempt": job.attempts})
        try:
            graph = Graph.from_dict(job.graph)
            if job.sweep:
                from sfumato.sweeps import combine, parse_axis

                axes = [parse_axis(f"{name}={spec}") for name, spec in job.sweep.get("axes", {}).items()]
                param_sets = combine(axes, zip_axes=bool(job.sweep.get("zip")), base=job.params)
                outcomes = self.engine.run_many(graph, param_sets, output_dir=folder, params_from_text=True)
                files = [f for o in outcomes for f in o.files]
                report = {"runs": [o.as_dict() for o in outcomes]}
                failed = [o for o in outcomes if o.status != "ok"]
                status, error = ("failed", f"{len(failed)} of {len(outcomes)} runs failed") if failed else ("done", None)
            else:
                result = self.engine.run(graph, job.params, output_dir=folder, params_from_text=True,
                                         cancel_event=cancel)
                files, report, status, error = list(result.report.files), result.report.as_dict(), "done", None
            self.store.finish(job.id, status, error=error, report=report, outputs=_relative(files, self.outputs))
        except (RunCancelledError, KeyboardInterrupt):
            self.store.finish(job.id, "cancelled", error="cancelled while running")
        except SfumatoError as problem:
            report = problem.report.as_dict() if getattr(problem, "report", None) is not None else None
            self.store.finish(job.id, "failed", error=str(problem), report=report)
        except Exception as problem:  # noqa: BLE001 - one bad job must not stop the worker
            self.store.finish(job.id, "failed", error=f"{type(problem).__name__}: {problem}\n{traceback.format_exc()}")
        finally:
            self.current, self._job_id = None, None
            final = self.store.get(job.id)
            self.hub.publish({"job": job.id, "type": f"job_{final.status if final else 'failed'}",
                              "error": final.error if final else None})


def _relative(files: list[str], root: Path) -> list[str]:
    return [str(Path(f).resolve().relative_to(root.resolve())) for f in files]
