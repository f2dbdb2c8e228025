"""The plugin contract: the hooks a sfumato plugin may implement.

A plugin is a module (or any object) with functions decorated by
``sfumato.hookimpl`` whose names match the specifications below, registered
under the entry-point group ``sfumato``::

    [project.entry-points.sfumato]
    my_nodes = "my_package"

Registration hooks are called once per plugin when the registry loads, each
plugin on its own: if one raises, that plugin is quarantined and reported, and
the others load. Event hooks are called during runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    import argparse

    from ..graph.document import Graph
    from ..run.report import RunOutcome
    from ..store.codecs import ValueCodec
    from ..store.models import ModelSource
    from .events import RunEvent
    from .ports import PortType
    from .requirements import Requirement

PROJECT = "sfumato"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class Executor(Protocol):
    """Runs the parameter sets of a sweep somewhere else (a Ray cluster): what ``sfumato_executors`` makes.

    ``sfumato run GRAPH --executor NAME --sweep ...`` builds one with the
    registered factory, ``factory(address=..., workers=..., device=...,
    dtype=...)`` (``--address``, ``--workers``, ``--device``, ``--dtype``;
    ``address`` and ``workers`` may be ``None``), then calls :meth:`run_many`
    once. ``sfumato serve --executor NAME`` builds one the same way and calls
    :meth:`run_many` once per queued job (JSON values, no ``on_outcome``); an
    executor that is also a context manager is entered when the server starts
    and exited when it stops, so it may keep workers and models up between jobs.
    """

    def run_many(self, graph: Graph, param_sets: list[dict[str, Any]], *, output_dir: str | Path,
                 seed: int | None = None, batch_size: int = 8, params_from_text: bool = False,
                 on_outcome: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
        """Run ``graph`` once per parameter set; return one :class:`~sfumato.RunOutcome` per set, in order.

        Args:
            graph: the graph, already loaded and validated.
            param_sets: each run's graph parameters; values are command-line
                text when ``params_from_text`` (parse them as ``--set`` does),
                JSON values otherwise.
            output_dir: the folder every run's files are written under.
            seed: the run seed (``--seed``), or ``None`` for the graph's own.
            batch_size: how many runs a worker may batch together (``--batch-size``).
            params_from_text: see ``param_sets``.
            on_outcome: if accepted, called with each run's outcome as soon as
                it is final, so the caller shows live progress. The CLI passes
                it only when the method's signature has this parameter.

        A run that fails is an outcome with its error, not an exception: the
        other runs go on.
        """
        ...


# -- registration ------------------------------------------------------------


@hookspec
def sfumato_port_types() -> "list[PortType]":
    """Return the port types this plugin defines.

    Called once at load, before node types are registered, so that this
    plugin's nodes (and other plugins' nodes) can use them. A name defined by
    two plugins follows the rule for node ids: neither wins, both plugins are
    reported, that type (and the nodes using it) is unavailable, and the rest
    of each plugin loads. Redefining a built-in type is reported the same way.
    """


@hookspec
def sfumato_port_conversions() -> "list[tuple[str, str, Any]]":
    """Return ``(source_type, target_type, function)`` conversions.

    A link from ``source_type`` to ``target_type`` is then valid, and
    ``function`` converts each value as it passes.
    """


@hookspec
def sfumato_node_types() -> "list[Any]":
    """Return the node types this plugin provides.

    Each item is a function or class decorated with ``@sfumato.node(...)`` (or
    its ``NodeSpec``). A node id already provided by another plugin is an error
    naming both; neither silently replaces the other. ``@node`` refuses
    ``async def`` functions when the module is imported, which quarantines the
    plugin with a :class:`sfumato.NodeDefinitionError` naming the node.
    """


@hookspec
def sfumato_graph_types() -> "list[Any]":
    """Return graphs this plugin ships as node types (:class:`sfumato.GraphType`).

    Called once at load, after node types are registered. A graph type's
    parameters and declared ``inputs`` are its inputs, its ``outputs`` its
    outputs; ``sfumato nodes`` lists it with its description. When a graph
    uses it, it is expanded into its inner nodes (``node/inner``), which are
    validated, cached and reported like any other node. An id already taken
    by a node type or another graph type is an error naming both.
    """


@hookspec
def sfumato_migrations() -> "list[Any]":
    """Return migrations of this plugin's node types (:class:`sfumato.Migration`).

    A node type's ``version`` goes up when its inputs change. Each migration
    upgrades a graph's node entry from one version to the next (renamed or
    removed inputs, a default that changed, or any function of the entry).
    Loading a graph written for an older version applies them in order and
    reports what changed; ``sfumato upgrade`` writes the result back.
    """


@hookspec
def sfumato_model_sources() -> "list[ModelSource]":
    """Return named model sources: a name graphs may use, and where its weights are.

    A source resolves a name such as ``tiny-shapes-diffusion`` to a local
    folder. Names must be unique across plugins. A source that declares its
    ``generator`` node (``"gan.generate"``) is dispatched there by
    ``generate.image``; the registry checks that node exists once every plugin
    has loaded, and validation reports a graph using a model whose generator
    is missing.
    """


@hookspec
def sfumato_executors() -> "dict[str, Any]":
    """Return executor factories by name: ``{"ray": factory}``.

    ``sfumato run GRAPH --executor NAME --sweep ...`` selects one, calls
    ``factory(address=..., workers=..., device=..., dtype=...)`` and then the
    returned :class:`sfumato.Executor`'s ``run_many`` (its docstring says with
    what). Called once at load; the factory runs only when the command does.
    """


@hookspec
def sfumato_value_codecs() -> "list[ValueCodec]":
    """Return codecs for this plugin's own value types, so the disk cache can store them.

    Each :class:`sfumato.ValueCodec` turns a value into parts the cache
    stores itself (JSON values, tuples, arrays, tensors, images, sfumato's
    value classes) and back; ``ValueCodec.for_dataclass(cls)`` covers a plain
    dataclass. Without one, values of the type are kept in memory only. A codec
    name or class claimed by two plugins is unavailable (both are reported).
    """


@hookspec
def sfumato_requirements() -> "list[Requirement]":
    """Return this plugin's optional dependencies (:class:`sfumato.Requirement`).

    Checked at load without importing them. When one is missing the plugin
    still loads, ``sfumato plugins`` lists it as "needs extra NAME" with the
    ``pip install`` line, its executors and commands refuse to start with that
    line, and a node failing to import the module reports it instead of a
    traceback.
    """


@hookspec
def sfumato_cli_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands to the ``sfumato`` command line.

    Call ``subparsers.add_parser(name, help=...)`` and set
    ``parser.set_defaults(handler=function)``; ``function(args)`` returns the
    exit code. Only called when the command line is built.
    """


# -- events ------------------------------------------------------------------


@hookspec
def sfumato_run_event(event: "RunEvent") -> None:
    """Observe a run event: run started/finished, node started, progress,
    finished, cached, skipped or failed, model loaded or evicted.

    Called synchronously on the thread that produced the event; keep it fast.
    An exception raised here is reported and does not stop the run.
    """
