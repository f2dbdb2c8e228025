"""Plugin discovery and the registry of everything plugins provide.

Plugins are found through the ``sfumato`` entry-point group and loaded one by
one: a plugin that fails to import or to register is quarantined with its
error, and the rest load. ``SFUMATO_DISABLE_PLUGINS=a,b`` turns plugins off.
"""

from __future__ import annotations

import difflib
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .errors import NodeDefinitionError, PluginError
from .models import ModelSource
from .nodes import NodeSpec, spec_of
from .ports import PortType, PortTypeRegistry

ENTRY_POINT_GROUP = "sfumato"
DISABLE_ENV = "SFUMATO_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """What ``sfumato plugins`` reports about one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"  # ok | failed | disabled
    error: str = ""
    node_ids: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "module": self.module, "distribution": self.distribution,
            "version": self.version, "status": self.status, "error": self.error,
            "nodes": len(self.node_ids),
        }


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _disabled_names() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


class Registry:
    """Node types, port types, model sources and executors from all plugins."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.ports = PortTypeRegistry.with_builtins()
        self.nodes: dict[str, NodeSpec] = {}
        self.models: dict[str, ModelSource] = {}
        self.executors: dict[str, Any] = {}
        self.plugins: dict[str, PluginRecord] = {}
        #: node ids provided by more than one plugin: id -> plugin names.
        self.conflicts: dict[str, list[str]] = {}
        self._event_listeners: list[Callable[[Any], None]] | None = None

    # -- loading -------------------------------------------------------------

    @classmethod
    def load(cls, *, entry_points: bool = True, plugins: Iterable[Any] = ()) -> "Registry":
        """Discover and register plugins.

        Args:
            entry_points: load plugins installed under the ``sfumato`` entry-point group.
            plugins: extra plugin objects (modules) to register, e.g. in tests.
        """
        registry = cls()
        disabled = _disabled_names()
        if entry_points:
            for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                registry._import_entry_point(entry_point, disabled)
        for plugin in plugins:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            if name in disabled:
                registry.plugins[name] = PluginRecord(name, name, status="disabled")
                continue
            registry.plugins[name] = PluginRecord(name, name)
            registry.manager.register(plugin, name=name)
        registry._register_everything()
        return registry

    def _import_entry_point(self, entry_point: metadata.EntryPoint, disabled: set[str]) -> None:
        dist = getattr(entry_point, "dist", None)
        record = PluginRecord(
            name=entry_point.name, module=entry_point.value,
            distribution=dist.name if dist else "", version=dist.version if dist else "",
        )
        self.plugins[entry_point.name] = record
        if entry_point.name in disabled:
            record.status = "disabled"
            return
        if self.manager.get_plugin(entry_point.name) is not None:
            record.status, record.error = "failed", f"another plugin is already named {entry_point.name!r}"
            return
        try:
            plugin = entry_point.load()
            self.manager.register(plugin, name=entry_point.name)
        except Exception as error:  # noqa: BLE001 - any import failure quarantines the plugin
            record.status, record.error = "failed", _one_line(error)
            record.detail = traceback.format_exc()

    def _quarantine(self, name: str, error: BaseException | str) -> None:
        record = self.plugins[name]
        record.status = "failed"
        record.error = error if isinstance(error, str) else _one_line(error)
        if not isinstance(error, str):
            record.detail = traceback.format_exc()
        for node_id in record.node_ids:
            self.nodes.pop(node_id, None)
        record.node_ids.clear()
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin, name=name)

    def _each_impl(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        hook = getattr(self.manager.hook, hook_name)
        return [(impl.plugin_name, impl.function) for impl in hook.get_hookimpls()]

    def _register_everything(self) -> None:
        for name, function in self._each_impl("sfumato_port_types"):
            try:
                for port in function() or ():
                    if not isinstance(port, PortType):
                        raise PluginError(f"sfumato_port_types returned {port!r}, not a PortType")
                    self.ports.register(port, owner=name)
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
        for name, function in self._each_impl("sfumato_port_conversions"):
            try:
                for source, target, convert in function() or ():
                    self.ports.add_conversion(source, target, convert)
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
        providers: dict[str, list[str]] = {}
        staged: dict[str, list[NodeSpec]] = {}
        for name, function in self._each_impl("sfumato_node_types"):
            try:
                specs = [self._resolve(spec_of(item), name) for item in function() or ()]
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
                continue
            staged[name] = specs
            for spec in specs:
                providers.setdefault(spec.id, []).append(name)
        for name, specs in staged.items():
            for spec in specs:
                owners = providers[spec.id]
                if len(owners) > 1:
                    # Neither plugin wins: an override chosen by load order is the
                    # silent breakage users of other node systems complain about.
                    self.conflicts[spec.id] = owners
                    others = ", ".join(repr(o) for o in owners if o != name)
                    record = self.plugins[name]
                    record.status = "failed"
                    message = f"node id {spec.id!r} is also defined by plugin {others}"
                    record.error = f"{record.error}; {message}" if record.error else message
                    continue
                self.nodes[spec.id] = spec
                self.plugins[name].node_ids.append(spec.id)
        for name, function in self._each_impl("sfumato_model_sources"):
            try:
                for source in function() or ():
                    if source.name in self.models:
                        raise PluginError(
                            f"model source {source.name!r} is also defined by plugin {self.models[source.name].plugin!r}"
                        )
                    source.plugin = name
                    self.models[source.name] = source
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
        for name, function in self._each_impl("sfumato_executors"):
            try:
                self.executors.update(function() or {})
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)

    def _resolve(self, spec: NodeSpec, plugin: str) -> NodeSpec:
        """Attach port type names to the spec's inputs and outputs."""
        for item in spec.inputs.values():
            if not item.port:
                item.port = (self.ports.name_for_annotation(item.annotation)
                             or self.ports.name_for_annotation(item.literal_type) or "")
            if item.port not in self.ports.types:
                raise NodeDefinitionError(
                    f"node {spec.id!r}: input {item.name!r} has type {item.annotation!r}, which is no "
                    "registered port type; register one with the sfumato_port_types hook"
                )
        resolved = {}
        for key, item in spec.outputs.items():
            if not item.port:
                item.port = self.ports.name_for_annotation(item.annotation) or ""
            if item.port not in self.ports.types:
                raise NodeDefinitionError(
                    f"node {spec.id!r}: output {key or '(return)'} has type {item.annotation!r}, which is no registered port type"
                )
            if not item.name:
                item.name = self.ports.get(item.port).output_name
            resolved[item.name] = item
        spec.outputs = resolved
        spec.plugin = plugin
        return spec

    # -- lookup --------------------------------------------------------------

    def node_type(self, node_id: str) -> NodeSpec:
        """The node type ``node_id``; ``KeyError`` says what exists nearby."""
        try:
            return self.nodes[node_id]
        except KeyError:
            raise KeyError(self.unknown_node_message(node_id)) from None

    def unknown_node_message(self, node_id: str) -> str:
        if node_id in self.conflicts:
            owners = " and ".join(repr(o) for o in self.conflicts[node_id])
            return (f"node type {node_id!r} is defined by plugins {owners}; disable one with "
                    f"{DISABLE_ENV}=name")
        close = difflib.get_close_matches(node_id, list(self.nodes), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        failed = [r.name for r in self.plugins.values() if r.status == "failed"]
        if failed:
            hint += f" (plugins that failed to load: {', '.join(failed)}; see 'sfumato plugins')"
        return f"unknown node type {node_id!r}{hint}"

    def model_source(self, name: str) -> ModelSource | None:
        return self.models.get(name)

    # -- events --------------------------------------------------------------

    def event_listeners(self) -> list[Callable[[Any], None]]:
        """The plugins' event hook functions (computed once)."""
        if self._event_listeners is None:
            self._event_listeners = [function for _, function in self._each_impl("sfumato_run_event")]
        return self._event_listeners

    def add_cli_commands(self, subparsers: Any) -> list[tuple[str, str]]:
        """Let plugins add subcommands; returns (plugin, error) for those that failed."""
        failures = []
        for name, function in self._each_impl("sfumato_cli_commands"):
            try:
                function(subparsers=subparsers)
            except Exception as error:  # noqa: BLE001
                failures.append((name, _one_line(error)))
        return failures


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry of installed plugins, loaded once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry.load()
        return _default
