"""A plugin author's test kit.

Three things a plugin's own tests need, without reaching into the engine's
private modules::

    import sfumato.testing as st
    from my_plugin import nodes
    import my_plugin

    def test_corners_get_darker():
        out = st.call_node(nodes.apply_vignette, images=st.solid_images((200, 200, 200)), strength=0.8)

    def test_in_a_graph(tmp_path):
        engine = st.make_engine(my_plugin, output_dir=tmp_path)   # just this plugin (+ what it names)
        ...

``call_node`` validates literal inputs exactly as a graph file's literals are
validated (ranges, choices, defaults), passes a real :class:`RunContext` when
the node asks for one, and returns the node's outputs as a dict keyed by output
name, so single- and multi-output nodes read the same. Two pytest fixtures
come with it, ``sfumato_engine`` (an engine over the installed plugins writing
into ``tmp_path``) and ``sfumato_context`` (a run context on the CPU): import
them into a test module or conftest
(``from sfumato.testing import sfumato_engine``), or use ``pytest -p sfumato.testing``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable

from .errors import ParameterError
from .plugin.context import RunContext, RunSettings
from .plugin.nodes import NodeSpec, spec_of
from .plugin.paths import PathPolicy
from .registry import Registry
from .run.engine import Engine
from .store.models import ModelManager

__all__ = ["call_node", "make_context", "make_engine", "plugin_registry", "sfumato_context", "sfumato_engine"]


def plugin_registry(*plugins: Any, entry_points: bool = False) -> Registry:
    """A registry holding only ``plugins`` (modules or objects with hook implementations).

    With ``entry_points=True`` the installed plugins are loaded too, e.g. to
    test a plugin against the built-in port types and nodes it links to.
    """
    return Registry.load(entry_points=entry_points, plugins=plugins)


def make_context(
    node: Any = None,
    *,
    node_id: str = "node",
    registry: Registry | None = None,
    seed: int = 0,
    output_dir: str | Path = "out",
    device: str = "cpu",
    dtype: str = "float32",
    params: dict[str, Any] | None = None,
    models: ModelManager | None = None,
    events: list[dict[str, Any]] | None = None,
    path_policy: PathPolicy | None = None,
) -> RunContext:
    """A :class:`RunContext` for calling a node directly.

    Given ``node``, the context enforces its ``context_keys`` as a run does:
    reading an undeclared setting raises :class:`UndeclaredContextReadError`.

    Args:
        node: the node (decorated function, class or spec) the context is for.
        node_id: the node's id, as it would be in a graph file (seeds derive from it).
        registry: where ``context.call_node`` looks node types up (default: installed plugins).
        seed, output_dir, device, dtype, params: the run settings the node sees.
        models: a model manager to share between calls (default: a new one over the registry's sources).
        events: if given, progress reports and recorded files are appended here as dicts,
            so a test can assert on them.
        path_policy: where the node may read and write (default: anywhere), e.g.
            ``PathPolicy.confined(read=[tmp_path])`` to test that a node checks the paths it opens.
    """
    registry = registry or _installed()
    spec = spec_of(node) if node is not None else None
    settings = RunSettings(device=device, dtype=dtype, seed=seed, output_dir=Path(output_dir),
                           params=dict(params or {}), cancel_event=threading.Event(), registry=registry,
                           paths=path_policy or PathPolicy())
    sink = events if events is not None else []

    def progress(node_id: str, node_type: str, current: int, total: int, message: str, preview: Any) -> None:
        sink.append({"event": "progress", "node": node_id, "current": current, "total": total,
                     "message": message, "preview": preview})

    def record_file(node_id: str, path: Path) -> None:
        sink.append({"event": "file", "node": node_id, "path": Path(path)})

    manager = models or ModelManager(sources=registry.models)
    # As in a run: a cached node may read only the run settings it declares (so a test catches an
    # undeclared read before users get stale cached results); a volatile one may read anything.
    keys = frozenset(spec.context_keys) if spec is not None and not spec.volatile else None
    return RunContext(node_id, spec.id if spec else "test.node", settings, manager, progress, record_file, keys)


def call_node(node: Any, /, *, context: RunContext | None = None, registry: Registry | None = None,
              **inputs: Any) -> dict[str, Any]:
    """Run one node type's implementation directly; returns ``{output_name: value}``.

    Literal inputs (numbers, text, choices) are validated as in a graph file, so
    an out-of-range value raises :class:`ParameterError` naming the input;
    defaults fill inputs that are not given. A node that takes a run context
    gets ``context`` (or a fresh one from :func:`make_context`).
    """
    registry = registry or (context.settings.registry if context is not None else None) or _installed()
    spec = _resolved_spec(node, registry)
    unknown = sorted(set(inputs) - set(spec.inputs))
    if unknown:
        raise TypeError(f"{spec.id} has no input(s) {unknown}; its inputs are {sorted(spec.inputs)}")
    ports = registry.ports
    arguments: dict[str, Any] = {}
    for name, value in inputs.items():
        port = ports.get(spec.inputs[name].port)
        try:
            arguments[name] = spec.inputs[name].validate_literal(value) if port.literal else value
        except ValueError as error:
            raise ParameterError(f"{spec.id}: input {name!r} = {value!r}: {error}") from None
    if spec.context_param:
        arguments[spec.context_param] = context or make_context(node, registry=registry)
    result = spec.make_callable()(**arguments)
    if not spec.outputs:
        return {}
    if spec.single_output:
        return {next(iter(spec.outputs)): result}
    if isinstance(result, dict):
        return {name: result[name] for name in spec.outputs}
    return dict(zip(spec.outputs, result))


def _resolved_spec(node: Any, registry: Registry) -> NodeSpec:
    """The node's spec with its port types attached, as registration would attach them.

    A node that no plugin registered (a test's own node) is resolved against
    ``registry``'s port types, so it can be called like a registered one.
    """
    spec = spec_of(node)
    registered = registry.nodes.get(spec.id)
    if registered is not None and registered.implementation is spec.implementation:
        return registered
    return registry._resolve(spec, spec.plugin or "tests")


_INSTALLED: list[Registry] = []


def _installed() -> Registry:
    """The registry of the installed plugins, loaded once per process (entry-point scans are slow)."""
    if not _INSTALLED:
        _INSTALLED.append(Registry.load())
    return _INSTALLED[0]


def make_engine(*plugins: Any, entry_points: bool | None = None, output_dir: str | Path = "out",
                **options: Any) -> Engine:
    """An :class:`Engine` over ``plugins`` (default: the installed plugins) on the CPU.

    Given plugins, only they are loaded unless ``entry_points=True``; ``options``
    go to :class:`Engine` (``cache_dir``, ``jobs``, ``observers`` ...).
    """
    load_installed = not plugins if entry_points is None else entry_points
    registry = plugin_registry(*plugins, entry_points=load_installed)
    options.setdefault("device", "cpu")
    return Engine(registry, output_dir=output_dir, **options)


# -- pytest fixtures ------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the kit works without pytest; only the fixtures need it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def sfumato_engine(tmp_path: Path) -> Iterable[Engine]:
        """An engine over the installed plugins, on the CPU, writing into ``tmp_path``."""
        yield make_engine(output_dir=tmp_path)

    @pytest.fixture
    def sfumato_context(tmp_path: Path) -> RunContext:
        """A run context on the CPU with seed 0, writing into ``tmp_path``."""
        return make_context(output_dir=tmp_path)
