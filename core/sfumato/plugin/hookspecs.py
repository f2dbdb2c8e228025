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

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from ..store.codecs import ValueCodec
    from ..store.models import ModelSource
    from .events import RunEvent
    from .ports import PortType
    from .requirements import Requirement

PROJECT = "sfumato"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


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
    naming both; neither silently replaces the other.
    """


@hookspec
def sfumato_model_sources() -> "list[ModelSource]":
    """Return named model sources: a name graphs may use, and where its weights are.

    A source resolves a name such as ``tiny-shapes-diffusion`` to a local
    folder. Names must be unique across plugins.
    """


@hookspec
def sfumato_executors() -> "dict[str, Any]":
    """Return executors by name: ``{"ray": factory}``.

    ``factory(**options)`` returns an object with
    ``run_many(engine, graph, param_sets, **options) -> list[RunOutcome]``.
    ``sfumato run --executor NAME`` selects one.
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
