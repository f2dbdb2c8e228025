"""The run report: what each node did, how long it took, what was written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How many distinct event-hook errors one report keeps (a hook failing on every progress event
#: is one entry with a count, not thousands).
MAX_EVENT_ERRORS = 20

#: Node statuses in a report.
RAN, CACHED, SKIPPED, FAILED, BLOCKED = "ran", "cached", "skipped", "failed", "blocked"


@dataclass(slots=True)
class NodeRecord:
    """One node's line in the report."""

    type: str
    status: str = SKIPPED
    seconds: float = 0.0
    error: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "status": self.status, "seconds": round(self.seconds, 6)}
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
    status: str = "running"
    seconds: float = 0.0
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    #: Graph outputs: JSON values as they are, other values summarised.
    outputs: dict[str, Any] = field(default_factory=dict)
    #: Errors raised by observers and plugins' ``sfumato_run_event`` hooks during this run:
    #: ``{"source": "plugin 'name' (sfumato_run_event)", "error": "...", "count": n}``.
    event_errors: list[dict[str, Any]] = field(default_factory=list)

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
                     data.get("status", "ok"), data.get("seconds", 0.0))
        for node_id, record in data.get("nodes", {}).items():
            report.nodes[node_id] = NodeRecord(record["type"], record["status"], record.get("seconds", 0.0),
                                               record.get("error", ""), record.get("reason", ""))
        report.files = list(data.get("files", []))
        report.models = list(data.get("models", []))
        report.outputs = dict(data.get("outputs", {}))
        report.event_errors = [dict(entry) for entry in data.get("event_errors", [])]
        return report

    def count(self, status: str) -> int:
        return sum(1 for record in self.nodes.values() if record.status == status)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "run_id": self.run_id,
            "graph": self.graph,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "seed": self.seed,
            "params": self.params,
            "nodes": {node_id: record.as_dict() for node_id, record in self.nodes.items()},
            "files": self.files,
            "models": self.models,
            "outputs": self.outputs,
            "counts": {s: self.count(s) for s in (RAN, CACHED, SKIPPED, FAILED, BLOCKED)},
        }
        if self.event_errors:
            data["event_errors"] = [dict(entry) for entry in self.event_errors]
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
