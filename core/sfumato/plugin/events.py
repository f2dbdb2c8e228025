"""Run events, delivered to the ``sfumato_run_event`` hook and to engine observers."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: The run whose node is executing in this context (each thread has its own): the
#: engine sets it around every node call, so that what the node triggers elsewhere
#: (a model load in the shared model manager) is credited to that run, even when
#: several runs share one engine and its threads.
ACTIVE_RUN: ContextVar[Any] = ContextVar("sfumato_active_run", default=None)


def active_run_id() -> str:
    """The id of the run executing in this context, or ``""`` outside any run."""
    run = ACTIVE_RUN.get()
    return run.run_id if run is not None else ""


@dataclass(frozen=True)
class RunEvent:
    """Base class of every run event. ``run_id`` identifies the run."""

    run_id: str

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]


@dataclass(frozen=True)
class RunStarted(RunEvent):
    graph: str
    node_count: int


@dataclass(frozen=True)
class RunFinished(RunEvent):
    status: str
    seconds: float


@dataclass(frozen=True)
class NodeStarted(RunEvent):
    node_id: str
    node_type: str


@dataclass(frozen=True)
class NodeProgress(RunEvent):
    node_id: str
    node_type: str
    current: int
    total: int
    message: str = ""
    preview: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class NodeFinished(RunEvent):
    node_id: str
    node_type: str
    seconds: float


@dataclass(frozen=True)
class NodeCached(RunEvent):
    node_id: str
    node_type: str


@dataclass(frozen=True)
class NodeSkipped(RunEvent):
    """A node that will not run in this run: an untaken branch of ``flow.if`` / ``flow.switch``."""

    node_id: str
    node_type: str
    reason: str


@dataclass(frozen=True)
class NodeFailed(RunEvent):
    node_id: str
    node_type: str
    error: str


@dataclass(frozen=True)
class ModelLoaded(RunEvent):
    key: str
    seconds: float
    bytes: int


@dataclass(frozen=True)
class ModelEvicted(RunEvent):
    key: str
    reason: str


_KINDS = {
    RunStarted: "run_started",
    RunFinished: "run_finished",
    NodeStarted: "node_started",
    NodeProgress: "node_progress",
    NodeFinished: "node_finished",
    NodeCached: "node_cached",
    NodeSkipped: "node_skipped",
    NodeFailed: "node_failed",
    ModelLoaded: "model_loaded",
    ModelEvicted: "model_evicted",
}
