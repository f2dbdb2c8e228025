"""The run context a node asks for by declaring a parameter of type :class:`RunContext`."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import RunCancelledError

if TYPE_CHECKING:
    from .models import ModelManager


@dataclass
class RunSettings:
    """Settings shared by every node of one run.

    Device, dtype and the graph document are resolved on first use: a graph of
    text and image nodes never imports torch, and a 10,000-node graph is not
    serialised unless a node asks for it.
    """

    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    output_dir: Path = Path("out")
    graph: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    registry: Any = None
    #: Someone watches this run live (a server page): nodes may send preview images with progress.
    previews: bool = False
    _resolved: tuple[str, str] | None = None
    _document: dict[str, Any] | None = None

    def resolved_device(self) -> tuple[str, str]:
        if self._resolved is None:
            from .devices import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            self._resolved = (device, resolve_dtype(self.dtype, device))
        return self._resolved

    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = self.graph.to_dict() if self.graph is not None else {}
        return self._document

    @property
    def graph_name(self) -> str:
        return self.graph.name if self.graph is not None else "graph"


@dataclass
class RunContext:
    """What a running node may know and use about its run.

    A node receives one by declaring a parameter annotated ``RunContext``; that
    parameter is not a port and does not appear in the graph file.
    """

    node_id: str
    node_type: str
    settings: RunSettings
    models: "ModelManager"
    _emit_progress: Callable[[str, str, int, int, str, Any], None]
    _record_file: Callable[[str, Path], None]

    @property
    def device(self) -> str:
        """The resolved device (``cpu``, ``cuda:0``, ``mps``)."""
        return self.settings.resolved_device()[0]

    @property
    def dtype(self) -> str:
        """The resolved dtype name (``float32``, ``float16``, ``bfloat16``)."""
        return self.settings.resolved_device()[1]

    @property
    def seed(self) -> int:
        """The run's seed (``--seed``); nodes with their own seed input should prefer it."""
        return self.settings.seed

    @property
    def output_dir(self) -> Path:
        """The folder this run writes into; nodes must not write outside it."""
        return self.settings.output_dir

    @property
    def graph_name(self) -> str:
        return self.settings.graph_name

    @property
    def graph_document(self) -> dict[str, Any]:
        """The graph file being run, as a JSON-able dict (for image metadata)."""
        return self.settings.document()

    @property
    def params(self) -> dict[str, Any]:
        """The resolved graph parameters of this run."""
        return self.settings.params

    @property
    def wants_previews(self) -> bool:
        """Whether preview images sent with :meth:`progress` are shown to anyone (skip the work if not)."""
        return self.settings.previews

    def node_seed(self, salt: str = "") -> int:
        """A seed derived from the run seed and this node's id, stable across runs."""
        digest = hashlib.sha256(f"{self.settings.seed}:{self.node_id}:{salt}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def progress(self, current: int, total: int, message: str = "", preview: Any = None) -> None:
        """Report progress (``current`` of ``total``); also checks for cancellation."""
        self.check_cancelled()
        self._emit_progress(self.node_id, self.node_type, current, total, message, preview)

    def check_cancelled(self) -> None:
        """Raise :class:`RunCancelledError` if the run was cancelled; call between steps."""
        if self.settings.cancel_event.is_set():
            raise RunCancelledError(f"run cancelled during node {self.node_id!r}")

    def call_node(self, node_type: str, **inputs: Any) -> Any:
        """Run another node type's implementation directly, in this node's context.

        For nodes that dispatch to other plugins' nodes (``generate.image``
        picks the backend by model). Inputs are validated like literals; the
        call is not cached separately, the calling node's result is.
        """
        spec = self.settings.registry.node_type(node_type)
        arguments = {}
        for name, value in inputs.items():
            if name not in spec.inputs:
                raise TypeError(f"{node_type} has no input {name!r}")
            port = self.settings.registry.ports.get(spec.inputs[name].port)
            arguments[name] = spec.inputs[name].validate_literal(value) if port.literal else value
        if spec.context_param:
            arguments[spec.context_param] = RunContext(self.node_id, spec.id, self.settings, self.models,
                                                       self._emit_progress, self._record_file)
        return spec.make_callable()(**arguments)

    def record_file(self, path: Path) -> None:
        """Note a file this node wrote, for the run report."""
        self._record_file(self.node_id, Path(path))
