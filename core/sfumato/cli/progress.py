"""Live progress for the command line: a node bar and a step bar (rich)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..plugin.events import (
    ModelEvicted,
    ModelLoaded,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunEvent,
    RunStarted,
)
from .output import stderr


class ProgressDisplay:
    """An engine observer that draws progress on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=stderr, transient=True,
        )
        self._nodes: Any = None
        self._steps: dict[str, Any] = {}

    def __enter__(self) -> "ProgressDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: RunEvent) -> None:
        progress = self.progress
        if isinstance(event, RunStarted):
            self._nodes = progress.add_task(f"running {event.graph}", total=event.node_count)
        elif isinstance(event, NodeStarted):
            progress.update(self._nodes, description=f"{event.node_id} ({event.node_type})")
        elif isinstance(event, (NodeFinished, NodeCached, NodeFailed, NodeSkipped)):
            progress.advance(self._nodes)
            task = self._steps.pop(event.node_id, None)
            if task is not None:
                progress.remove_task(task)
        elif isinstance(event, NodeProgress):
            task = self._steps.get(event.node_id)
            if task is None:
                task = self._steps[event.node_id] = progress.add_task(f"  {event.node_id} steps", total=event.total)
            progress.update(task, completed=event.current, total=event.total)
        elif isinstance(event, ModelLoaded):
            # A line of its own: load time is not part of any node's time in the table.
            progress.console.print(f"[dim]model load: {escape(event.key)} in {event.seconds:.2f}s[/]")
        elif isinstance(event, ModelEvicted):
            progress.console.print(f"[dim]evicted model {escape(event.key)}: {escape(event.reason)}[/]")


class SweepProgress:
    """Bars for sweeps: runs finished of total and, for local sweeps, node calls done of total.

    A local sweep's runs advance together and finish together, so the node
    bar is the one that moves; an executor reports whole runs (:meth:`run_done`).
    """

    def __init__(self, total: int, description: str = "sweep runs") -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=stderr, transient=True)
        self.task = self.progress.add_task(description, total=total)
        self._nodes: Any = None
        self._node_total = 0

    def __enter__(self) -> "SweepProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_done(self, outcome: Any) -> None:
        """Advance by one finished run of an executor (which sends outcomes, not events)."""
        where = f" on {outcome.worker}" if getattr(outcome, "worker", "") else ""
        self.progress.update(self.task, description=f"sweep runs (run {outcome.index} {outcome.status}{where})")
        self.progress.advance(self.task)

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            if self._nodes is None:
                self._nodes = self.progress.add_task("  node calls", total=0)
            self._node_total += event.node_count
            self.progress.update(self._nodes, total=self._node_total)
        elif event.kind == "run_finished":
            self.progress.advance(self.task)
        elif isinstance(event, NodeStarted):
            self.progress.update(self.task, description=f"sweep runs ({event.node_id})")
        elif isinstance(event, (NodeFinished, NodeCached, NodeFailed, NodeSkipped)) and self._nodes is not None:
            self.progress.advance(self._nodes)
