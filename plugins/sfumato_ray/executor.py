"""The Ray executor: sweep runs spread over long-lived worker actors.

Each worker actor holds its own :class:`sfumato.Engine`, so models stay loaded
across the chunks of runs it receives. What travels is plain data: the graph
as JSON, parameter sets, and back the run reports (JSON) and the bytes of the
files each run wrote, which the caller saves where a local run would have.
A worker that dies mid-chunk is replaced and its runs are retried elsewhere,
up to ``max_retries`` times; finished runs are never redone.

Used as a context manager (``with RayExecutor(...) as executor:``, what
``sfumato serve --executor ray`` does), the executor stays up between calls
of :meth:`RayExecutor.run_many`: the cluster connection and the actors, with
the models they loaded, last until the ``with`` ends, so a queue of jobs pays
for starting workers and loading models once. A held executor makes one actor
per GPU, and one on a cluster without GPUs, unless ``workers`` says otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Self

from sfumato import Graph, RunReport
from sfumato import RunOutcome, claim_new_file, path_inside, write_atomically

#: Ray's unix socket paths must stay short; longer temp folders fall back to /tmp.
_MAX_TEMP_DIR = 60


class SweepWorker:
    """A Ray actor body: one engine, kept across chunks."""

    def __init__(self, device: str, dtype: str) -> None:
        from sfumato import Engine

        self.engine = Engine(device=device, dtype=dtype)
        self.name = f"{os.uname().nodename}:{os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def run_chunk(self, graph_document: dict[str, Any], param_sets: list[dict[str, Any]], seed: int | None,
                  batch_size: int, params_from_text: bool, run_indices: list[int]) -> list[dict[str, Any]]:
        graph = Graph.from_dict(graph_document)
        workdir = Path(tempfile.mkdtemp(prefix="sfumato-ray-"))
        try:
            # The runs keep their indices in the whole sweep, so their files are named as a local sweep's.
            outcomes = self.engine.run_many(graph, param_sets, batch_size=batch_size, seed=seed,
                                            output_dir=workdir, params_from_text=params_from_text,
                                            run_indices=run_indices)
            results = []
            for outcome in outcomes:
                files = {}
                for written in outcome.files:
                    path = Path(written)
                    files[str(path.relative_to(workdir))] = path.read_bytes()
                results.append({
                    "status": outcome.status, "params": outcome.params, "seconds": outcome.seconds,
                    "error": outcome.error, "files": files, "worker": self.name,
                    "report": outcome.report.as_dict() if outcome.report is not None else None,
                })
            return results
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class RayExecutor:
    """Spreads sweep runs over Ray actors (``--executor ray``).

    Args:
        address: ``None`` starts a private local cluster (shut down afterwards);
            ``auto`` or ``ray://host:port`` connects to an existing one.
        workers: actors to start; default one per GPU, else the cluster's CPUs (at most 8).
        device: device of each worker's engine.
        dtype: dtype of each worker's engine.
        max_retries: times a run is retried after its worker died.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, device: str = "auto",
                 dtype: str = "auto", max_retries: int = 2) -> None:
        self.address = address
        self.workers = workers
        self.device = device
        self.dtype = dtype
        self.max_retries = max_retries
        self.actors: list[Any] = []
        self.dispatched = 0
        #: Inside ``with``: the cluster and actors outlive each run_many call.
        self.held = False
        self._started_cluster = False
        self._temp_dir: Path | None = None

    def __enter__(self) -> Self:
        self.held = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors, and the cluster if this executor started it."""
        self.held = False
        self._release()

    # -- cluster -------------------------------------------------------------

    def _start(self, output_dir: Path) -> bool:
        """Connect or start Ray; returns True when this executor started the cluster."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
            return False
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on this machine only
        temp_dir = (output_dir / ".ray").resolve()
        if len(str(temp_dir)) > _MAX_TEMP_DIR or self.held:
            # A held cluster outlives any one run's folder (a server deletes a re-run job's folder).
            temp_dir = Path(tempfile.mkdtemp(prefix="sfumato-ray-", dir="/tmp"))
            self._temp_dir = temp_dir if self.held else None
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=max(self.workers or 2, 1), include_dashboard=False, _temp_dir=str(temp_dir),
                 logging_level="WARNING", log_to_driver=False)
        return True

    def _new_actor(self) -> Any:
        import ray

        gpus = ray.cluster_resources().get("GPU", 0)
        options = {"num_gpus": 1} if gpus >= 1 and self.device != "cpu" else {"num_cpus": 1}
        actor_class = ray.remote(max_restarts=0)(SweepWorker)
        return actor_class.options(**options).remote(self.device, self.dtype)

    def _worker_count(self) -> int:
        import ray

        if self.workers:
            return self.workers
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus and self.device != "cpu":
            return gpus
        if self.held:
            return 1  # a queue runs one job at a time; each more CPU actor would hold its own copy of the models
        return max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))

    def _release(self) -> None:
        """Kill the actors; shut the cluster down if this executor started it."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self._started_cluster:
            self._started_cluster = False
            ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # -- running ---------------------------------------------------------------

    def run_many(self, graph: Graph, param_sets: list[dict[str, Any]], *, output_dir: str | Path,
                 seed: int | None = None, batch_size: int = 8, params_from_text: bool = False,
                 on_outcome: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
        """Run every parameter set on the workers; results saved under ``output_dir``.

        ``on_outcome`` is called with each run's outcome as soon as it is final
        (done, or failed after its retries), so a caller can show progress.
        """
        report_outcome = on_outcome or (lambda outcome: None)
        import ray
        from ray.exceptions import RayActorError

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self._started_cluster = self._start(output_dir) or self._started_cluster
        try:
            if not self.actors:  # a held executor keeps the actors (and their models) of earlier calls
                self.actors = [self._new_actor() for _ in range(self._worker_count())]
            chunk = max(1, batch_size)
            queue = [list(range(i, min(i + chunk, len(param_sets)))) for i in range(0, len(param_sets), chunk)]
            attempts = {index: 0 for index in range(len(param_sets))}
            outcomes = [RunOutcome(index, dict(params)) for index, params in enumerate(param_sets)]
            document = graph.to_dict()
            running: dict[Any, tuple[Any, list[int]]] = {}
            idle = list(self.actors)
            while queue or running:
                while queue and idle:
                    actor, indices = idle.pop(), queue.pop(0)
                    for index in indices:
                        attempts[index] += 1
                    future = actor.run_chunk.remote(document, [param_sets[i] for i in indices], seed, batch_size,
                                                    params_from_text, indices)
                    running[future] = (actor, indices)
                    self.dispatched += 1
                done, _ = ray.wait(list(running), num_returns=1)
                future = done[0]
                actor, indices = running.pop(future)
                try:
                    results = ray.get(future)
                except RayActorError as error:
                    # The worker died: replace it and retry its runs elsewhere.
                    self.actors.remove(actor)
                    replacement = self._new_actor()
                    self.actors.append(replacement)
                    idle.append(replacement)
                    retry = [i for i in indices if attempts[i] <= self.max_retries]
                    for index in indices:
                        if index not in retry:
                            outcomes[index].status = "failed"
                            outcomes[index].error = f"worker died {attempts[index]} times: {error}"
                            outcomes[index].attempts = attempts[index]
                            report_outcome(outcomes[index])
                    if retry:
                        queue.insert(0, retry)
                    continue
                idle.append(actor)
                for index, result in zip(indices, results):
                    self._save(outcomes[index], result, output_dir, attempts[index])
                    report_outcome(outcomes[index])
            return outcomes
        finally:
            if not self.held:
                self._release()

    @staticmethod
    def _save(outcome: RunOutcome, result: dict[str, Any], output_dir: Path, attempts: int) -> None:
        """Write a remote run's files under ``output_dir`` (never overwriting) and fill its outcome."""
        outcome.status, outcome.params = result["status"], result["params"]
        outcome.seconds, outcome.error = result["seconds"], result["error"]
        outcome.attempts, outcome.worker = attempts, result["worker"]
        saved = []
        for relative, data in result["files"].items():
            target = claim_new_file(path_inside(output_dir, relative))
            write_atomically(target, lambda tmp, data=data: tmp.write_bytes(data))
            saved.append(str(target))
        outcome.files = saved
        if result["report"] is not None:
            outcome.report = RunReport.from_dict(result["report"])
            outcome.report.files = saved
