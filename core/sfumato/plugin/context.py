"""The run context a node asks for by declaring a parameter of type :class:`RunContext`."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import NodeDefinitionError, RunCancelledError
from .paths import PathNotAllowedError, PathPolicy

if TYPE_CHECKING:
    from ..store.models import ModelManager


class UndeclaredContextReadError(NodeDefinitionError):
    """A node read a run setting (seed, params, ...) that its ``context_keys`` do not declare.

    Cache signatures are computed before anything runs, from what each node
    declares; a result that depends on an undeclared setting would be served
    stale for another value of it, so the read is refused instead.
    """


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
    #: Where nodes may read and write files (see :mod:`sfumato.plugin.paths`).
    paths: PathPolicy = field(default_factory=PathPolicy)
    #: This run's position in its sweep; ``None`` for a single run (savers put it in file names).
    run_index: int | None = None
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

    Reading a run setting (``seed``, ``params``, ``output_dir``, the graph,
    ``device``, ``dtype``) that the node type does not list in its
    ``context_keys`` raises :class:`UndeclaredContextReadError` the first time:
    the setting is not part of the node's cache signature, so its result would
    otherwise be reused, stale, for another value. Volatile nodes (never
    cached) and contexts made outside the engine may read everything.
    """

    node_id: str
    node_type: str
    settings: RunSettings
    models: "ModelManager"
    _emit_progress: Callable[[str, str, int, int, str, Any], None]
    _record_file: Callable[[str, Path], None]
    #: The run settings this node's signature includes; ``None`` allows every read.
    _context_keys: frozenset[str] | None = None

    def _reading(self, key: str, what: str) -> None:
        keys = self._context_keys
        if keys is not None and key not in keys:
            declared = ", ".join(repr(k) for k in sorted(keys)) or "none"
            wanted = ", ".join(f'"{k}"' for k in sorted(keys | {key}))
            raise UndeclaredContextReadError(
                f"node {self.node_id!r} ({self.node_type}) reads the run's {what} through its context, but its "
                f"context_keys do not declare {key!r} (declared: {declared}); its cached results would be reused "
                f"for another {what}. Declare it: @node(..., cache=sfumato.CachePolicy(context_keys=({wanted})))")

    @property
    def device(self) -> str:
        """The resolved device (``cpu``, ``cuda:0``, ``mps``)."""
        self._reading("device", "device")
        return self.settings.resolved_device()[0]

    @property
    def dtype(self) -> str:
        """The resolved dtype name (``float32``, ``float16``, ``bfloat16``)."""
        self._reading("dtype", "dtype")
        return self.settings.resolved_device()[1]

    @property
    def seed(self) -> int:
        """The run's seed (``--seed``); nodes with their own seed input should prefer it."""
        self._reading("seed", "seed")
        return self.settings.seed

    @property
    def run_index(self) -> int | None:
        """This run's position in its sweep (``None`` for a single run), so its files never collide."""
        self._reading("run_index", "position in its sweep")
        return self.settings.run_index

    @property
    def output_dir(self) -> Path:
        """The folder this run writes into; nodes must not write outside it."""
        self._reading("output_dir", "output folder")
        return self.settings.output_dir

    @property
    def graph_name(self) -> str:
        self._reading("graph", "graph")
        return self.settings.graph_name

    @property
    def graph_document(self) -> dict[str, Any]:
        """The graph file being run, as a JSON-able dict (for image metadata)."""
        self._reading("graph", "graph")
        return self.settings.document()

    @property
    def params(self) -> dict[str, Any]:
        """The resolved graph parameters of this run."""
        self._reading("params", "parameters")
        return self.settings.params

    @property
    def wants_previews(self) -> bool:
        """Whether preview images sent with :meth:`progress` are shown to anyone (skip the work if not)."""
        return self.settings.previews

    @property
    def path_policy(self) -> PathPolicy:
        """Where this run may read and write files."""
        return self.settings.paths

    def readable_path(self, path: str | Path) -> Path:
        """``path`` (``~`` expanded) if this run may read it; else :class:`PathNotAllowedError`.

        Inputs declared :data:`sfumato.ReadablePath` are checked by the engine;
        call this for paths a node finds by itself (files in a folder, paths in
        a manifest or an index) before opening them.
        """
        return self._checked(path, "read")

    def writable_path(self, path: str | Path) -> Path:
        """``path`` (``~`` expanded) if this run may write it; else :class:`PathNotAllowedError`."""
        return self._checked(path, "write")

    def _checked(self, path: str | Path, access: str) -> Path:
        try:
            return self.settings.paths.check(path, access)  # type: ignore[arg-type]
        except PathNotAllowedError as error:
            raise PathNotAllowedError(f"node {self.node_id!r} ({self.node_type}): {error}") from None

    def node_seed(self, salt: str = "") -> int:
        """A seed derived from the run seed and this node's id, stable across runs."""
        self._reading("seed", "seed")
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
            # The calling node's signature is what gets cached, so its declared keys govern.
            arguments[spec.context_param] = RunContext(self.node_id, spec.id, self.settings, self.models,
                                                       self._emit_progress, self._record_file,
                                                       self._context_keys)
        return spec.make_callable()(**arguments)

    def node_inputs(self, node_type: str) -> tuple[str, ...]:
        """The input names of another node type, to pass :meth:`call_node` only what it takes."""
        return tuple(self.settings.registry.node_type(node_type).inputs)

    def record_file(self, path: Path) -> None:
        """Note a file this node wrote, for the run report."""
        self._record_file(self.node_id, Path(path))
