"""The exceptions sfumato raises, all subclasses of :class:`SfumatoError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run.report import RunReport


class SfumatoError(Exception):
    """Base class of every error sfumato raises on purpose."""


@dataclass(frozen=True)
class GraphIssue:
    """One problem found in a graph: where it is and what is wrong.

    ``path`` is a JSON path into the graph file (``nodes.save.inputs.images``);
    ``node`` is the node id when the problem belongs to a node. ``severity`` is
    ``"error"`` (the graph does not run) or ``"warning"`` (reported, e.g. an
    input the chosen backend ignores, and the run goes on).
    """

    path: str
    message: str
    node: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "node": self.node, "message": self.message, "severity": self.severity}


class GraphValidationError(SfumatoError):
    """A graph failed validation; ``issues`` lists every problem found."""

    def __init__(self, issues: list[GraphIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} problem(s){where}:\n{lines}")


class NodeDefinitionError(SfumatoError):
    """A node type is declared wrongly (raised when a plugin registers it)."""


class PluginError(SfumatoError):
    """A plugin could not be loaded or registered, or two plugins conflict."""


class ParameterError(SfumatoError):
    """A graph parameter value (``--set name=value``) is unknown or invalid."""


class NodeExecutionError(SfumatoError):
    """A node raised while running.

    Carries the node id, its type and the original exception (also chained as
    ``__cause__``), and the report of the run so far.
    """

    def __init__(self, node_id: str, node_type: str, original: BaseException,
                 report: "RunReport | None" = None) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.original = original
        self.report = report
        super().__init__(f"node {node_id!r} ({node_type}) failed: {type(original).__name__}: {original}")


class RunFailedError(SfumatoError):
    """A ``keep_going`` run finished with failed nodes; ``report`` says which."""

    def __init__(self, failures: list[NodeExecutionError], report: "RunReport") -> None:
        self.failures = failures
        self.report = report
        names = ", ".join(f"{f.node_id} ({f.node_type})" for f in failures)
        super().__init__(f"{len(failures)} node(s) failed: {names}")


class RunCancelledError(SfumatoError):
    """The run was cancelled (Ctrl-C or :meth:`RunContext.cancel`)."""


class ModelNotFoundError(SfumatoError):
    """A model name or path did not resolve; the message says where it looked."""
