"""What a run produced: its report (what each node did, how long it took, what
was written), its result, and a sweep run's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: How many distinct event-hook errors one report keeps (a hook failing on every progress event
#: is one entry with a count, not thousands).
MAX_EVENT_ERRORS = 20

class _Status(StrEnum):
    """A status that compares equal to, prints and reprs as its text (``'cached'``)."""

    def __repr__(self) -> str:
        return repr(self.value)


class NodeStatus(_Status):
    """What happened to one node in a run."""

    RAN = "ran"
    CACHED = "cached"
    #: Not needed by any output, or its consumers were served from the cache.
    SKIPPED = "skipped"
    FAILED = "failed"
    #: Not run because a node it depends on failed.
    BLOCKED = "blocked"


class RunStatus(_Status):
    """Where a run (or one run of a sweep) stands."""

    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class NodeRecord:
    """One node's line in the report."""

    type: str
    status: NodeStatus = NodeStatus.SKIPPED
    seconds: float = 0.0
    error: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "status": str(self.status), "seconds": round(self.seconds, 6)}
        if self.error:
            data["error"] = self.error
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass
class RunReport:
    """The outcome of one run, JSON-able through :meth:`as_dict`."""

    run_id: str
    graph: str
    params: dict[str, Any]
    seed: int
    status: RunStatus = RunStatus.RUNNING
    seconds: float = 0.0
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    #: Graph outputs: JSON values as they are, other values summarised.
    outputs: dict[str, Any] = field(default_factory=dict)
    #: Errors raised by observers and plugins' ``sfumato_run_event`` hooks during this run:
    #: ``{"source": "plugin 'name' (sfumato_run_event)", "error": "...", "count": n}``.
    event_errors: list[dict[str, Any]] = field(default_factory=list)
    #: Validation warnings of the graph as run (``GraphIssue.as_dict()``): inputs a backend ignores, ...
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def add_event_error(self, source: str, error: str) -> None:
        """Note an event-hook error; repeats of the same one only raise its count."""
        for entry in self.event_errors:
            if entry["source"] == source and entry["error"] == error:
                entry["count"] += 1
                return
        if len(self.event_errors) < MAX_EVENT_ERRORS:
            self.event_errors.append({"source": source, "error": error, "count": 1})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunReport":
        """Rebuild a report from :meth:`as_dict` (e.g. one sent back by a remote worker)."""
        report = cls(data["run_id"], data["graph"], data.get("params", {}), data.get("seed", 0),
                     RunStatus(data.get("status", "ok")), data.get("seconds", 0.0))
        for node_id, record in data.get("nodes", {}).items():
            report.nodes[node_id] = NodeRecord(record["type"], NodeStatus(record["status"]),
                                               record.get("seconds", 0.0), record.get("error", ""),
                                               record.get("reason", ""))
        report.files = list(data.get("files", []))
        report.models = list(data.get("models", []))
        report.outputs = dict(data.get("outputs", {}))
        report.event_errors = [dict(entry) for entry in data.get("event_errors", [])]
        report.warnings = [dict(entry) for entry in data.get("warnings", [])]
        return report

    def count(self, status: NodeStatus) -> int:
        return sum(1 for record in self.nodes.values() if record.status == status)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "run_id": self.run_id,
            "graph": self.graph,
            "status": str(self.status),
            "seconds": round(self.seconds, 6),
            "seed": self.seed,
            "params": self.params,
            "nodes": {node_id: record.as_dict() for node_id, record in self.nodes.items()},
            "files": self.files,
            "models": self.models,
            "outputs": self.outputs,
            "counts": {str(status): self.count(status) for status in NodeStatus},
        }
        if self.event_errors:
            data["event_errors"] = [dict(entry) for entry in self.event_errors]
        if self.warnings:
            data["warnings"] = [dict(entry) for entry in self.warnings]
        return data


@dataclass
class RunResult:
    """What :meth:`Engine.run` returns: the graph outputs and the run report."""

    outputs: dict[str, Any]
    report: RunReport
    values: dict[str, dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]


@dataclass
class RunOutcome:
    """One run of a sweep: its parameters, status, outputs and report."""

    index: int
    params: dict[str, Any]
    status: RunStatus = RunStatus.PENDING
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    error: str = ""
    report: RunReport | None = None
    #: Executors that retry runs (a remote worker died) count the attempts, and name the worker.
    attempts: int = 1
    worker: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = {"index": self.index, "params": self.params, "status": str(self.status),
                "seconds": round(self.seconds, 6), "files": self.files}
        if self.error:
            data["error"] = self.error
        if self.attempts != 1:
            data["attempts"] = self.attempts
        if self.worker:
            data["worker"] = self.worker
        if self.report is not None:
            data["outputs"] = self.report.outputs
            data["nodes"] = {n: str(r.status) for n, r in self.report.nodes.items()}
        return data


def summarize_value(value: Any) -> Any:
    """A JSON-able stand-in for a graph output in a report."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    # None counts as a scalar: a score with nothing to score ("background": None) is still a value.
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value):
        return list(value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, scalar) for k, v in value.items()):
        return dict(value)
    length = f" x{len(value)}" if hasattr(value, "__len__") else ""
    return f"<{type(value).__name__}{length}>"
