"""Plugin discovery and the registry of everything plugins provide.

Plugins are found through the ``sfumato`` entry-point group and loaded one by
one: a plugin that fails to import or to register is quarantined with its
error, and the rest load. ``SFUMATO_DISABLE_PLUGINS=a,b`` turns plugins off.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from .errors import NodeDefinitionError, PluginError
from .graph.migrations import Migration, index_migrations
from .graph.subgraph import GraphType, graph_type_spec
from .plugin import hookspecs
from .plugin.nodes import NodeSpec, spec_of
from .plugin.ports import PortType, PortTypeRegistry
from .plugin.requirements import MissingExtraError, Requirement
from .store.codecs import ValueCodec
from .store.models import ModelSource

ENTRY_POINT_GROUP = "sfumato"
DISABLE_ENV = "SFUMATO_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """What ``sfumato plugins`` reports about one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"  # ok | needs-extra | failed | disabled
    error: str = ""
    node_ids: list[str] = field(default_factory=list)
    detail: str = ""
    #: Declared optional dependencies that are not installed.
    missing: list[Requirement] = field(default_factory=list)
    #: What it registered besides nodes, by kind ("conversions", "codecs", "executors", "commands").
    provides: dict[str, list[str]] = field(default_factory=dict)

    @property
    def needs(self) -> str:
        """"needs extra X (pip install ...)" for each missing optional dependency, or ""."""
        return "; ".join(f"needs extra {r.extra}" + (f" for {r.feature}" if r.feature else "") + f": {r.install}"
                         for r in self.missing)

    def add_error(self, message: str) -> None:
        """Mark the plugin failed with ``message`` (kept loaded: what works of it stays available)."""
        self.status = "failed"
        self.error = f"{self.error}; {message}" if self.error else message

    def as_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name, "module": self.module, "distribution": self.distribution,
            "version": self.version, "status": self.status, "error": self.error,
            "nodes": len(self.node_ids),
        }
        if self.missing:
            data["needs"] = [{"module": r.module, "extra": r.extra, "feature": r.feature, "install": r.install}
                             for r in self.missing]
        return data


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
        #: port type names defined by more than one plugin (or redefining a built-in): name -> owners.
        self.port_conflicts: dict[str, list[str]] = {}
        #: node ids left out because a port type they use is unavailable: id -> reason.
        self.unavailable: dict[str, str] = {}
        #: Model sources whose declared generator node is missing: name -> reason.
        self.model_problems: dict[str, str] = {}
        #: Plugins' disk-cache codecs for their own value types, by codec name.
        self.codecs: dict[str, ValueCodec] = {}
        #: Graphs plugins ship as node types, by id (also listed in ``nodes``, as specs).
        self.graph_types: dict[str, GraphType] = {}
        #: Node entry migrations by (node type, from version).
        self.migrations: dict[tuple[str, int], Migration] = {}
        self._conflicted_classes: dict[type, str] = {}
        self._event_listeners: list[tuple[str, Callable[..., Any]]] | None = None

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
        self._register_port_types()
        for name, function in self._each_impl("sfumato_port_conversions"):
            try:
                for source, target, convert in function() or ():
                    self.ports.add_conversion(source, target, convert)
                    self.plugins[name].provides.setdefault("conversions", []).append(f"{source} -> {target}")
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
        providers: dict[str, list[str]] = {}
        staged: dict[str, list[NodeSpec]] = {}
        for name, function in self._each_impl("sfumato_node_types"):
            try:
                specs = []
                for item in function() or ():
                    spec = spec_of(item)
                    reason = self._unavailable_port(spec)
                    if reason:
                        # Like a node id conflict: this node is out, the rest of the plugin stays.
                        self.unavailable[spec.id] = reason
                        self.plugins[name].add_error(f"node {spec.id!r} is unavailable: {reason}")
                        continue
                    specs.append(self._resolve(spec, name))
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
                    self.plugins[name].add_error(f"node id {spec.id!r} is also defined by plugin {others}")
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
        self._check_generators()
        self._register_graph_types()
        self._register_migrations()
        self._check_requirements()
        for name, function in self._each_impl("sfumato_executors"):
            try:
                executors = dict(function() or {})
                missing = self.plugins[name].missing
                if missing:
                    executors = {key: _refusing(factory, missing, name) for key, factory in executors.items()}
                self.executors.update(executors)
                self.plugins[name].provides["executors"] = sorted(executors)
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
        self._register_codecs()

    def _check_generators(self) -> None:
        """Every model source's declared generator node must exist (checked once, at load).

        A missing one is kept in :attr:`model_problems`, which validation reports
        for graphs using the model. It is also an error of the plugin declaring
        the source unless some plugin is disabled or failed (which may be why).
        """
        incomplete = any(record.status in ("disabled", "failed") for record in self.plugins.values())
        for source in self.models.values():
            if not source.generator or source.generator in self.nodes:
                continue
            reason = self.unknown_node_message(source.generator)
            self.model_problems[source.name] = f"its generator node: {reason}"
            if not incomplete and source.plugin in self.plugins:
                self.plugins[source.plugin].add_error(
                    f"model source {source.name!r} names generator node {source.generator!r}, which no plugin provides")

    def _register_graph_types(self) -> None:
        """Graphs shipped as node types: listed like node types, expanded when planned."""
        for name, function in self._each_impl("sfumato_graph_types"):
            try:
                found = list(function() or ())
                for graph_type in found:
                    if not isinstance(graph_type, GraphType):
                        raise PluginError(f"sfumato_graph_types returned {graph_type!r}, not a GraphType")
            except Exception as error:  # noqa: BLE001 - a graph file that does not load quarantines too
                self._quarantine(name, error)
                continue
            for graph_type in found:
                owner = self.nodes[graph_type.id].plugin if graph_type.id in self.nodes else ""
                if owner:
                    self.plugins[name].add_error(f"graph type {graph_type.id!r} has the id of a node type of "
                                                 f"plugin {owner!r}")
                    continue
                graph_type.plugin = name
                self.graph_types[graph_type.id] = graph_type
        for graph_type in self.graph_types.values():
            # After all are known: a graph type's outputs may come from another graph type.
            spec = graph_type_spec(graph_type, self.graph_types, self.nodes, self.ports)
            self.nodes[graph_type.id] = spec
            self.plugins[graph_type.plugin].node_ids.append(graph_type.id)

    def _register_migrations(self) -> None:
        staged: list[Migration] = []
        for name, function in self._each_impl("sfumato_migrations"):
            try:
                found = list(function() or ())
                for migration in found:
                    if not isinstance(migration, Migration):
                        raise PluginError(f"sfumato_migrations returned {migration!r}, not a Migration")
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
                continue
            staged.extend(dataclasses.replace(migration, plugin=name) for migration in found)
        try:
            self.migrations = index_migrations(staged)
        except ValueError as error:
            for migration in staged:
                self.plugins[migration.plugin].add_error(str(error))
            self.migrations = {}

    def node_versions(self) -> dict[str, int]:
        """The installed version of each node type (graph types excluded: they are expanded)."""
        return {node_id: spec.version for node_id, spec in self.nodes.items() if node_id not in self.graph_types}

    def _register_port_types(self) -> None:
        """Register port types; a name claimed twice is unavailable and reported on both plugins."""
        staged: dict[str, list[PortType]] = {}
        owners: dict[str, list[str]] = {}
        for name, function in self._each_impl("sfumato_port_types"):
            try:
                ports = list(function() or ())
                for port in ports:
                    if not isinstance(port, PortType):
                        raise PluginError(f"sfumato_port_types returned {port!r}, not a PortType")
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
                continue
            staged[name] = ports
            for port in ports:
                if name not in owners.setdefault(port.name, []):
                    owners[port.name].append(name)
        for name, ports in staged.items():
            for port in ports:
                claimants = owners[port.name]
                if self.ports.owners.get(port.name) == "sfumato":
                    # A built-in type stays what every other plugin expects; only this definition is refused.
                    self.plugins[name].add_error(f"port type {port.name!r} is built into sfumato; "
                                                 "this plugin's definition is ignored")
                    continue
                if len(claimants) > 1:
                    self.port_conflicts[port.name] = claimants
                    others = [repr(o) for o in claimants if o != name]
                    self.plugins[name].add_error(f"port type {port.name!r} is also defined by "
                                                 f"{' and '.join(others)}; it is unavailable")
                    continue
                self.ports.register(port, owner=name)
        self._conflicted_classes = {
            port.python_type: port.name for ports in staged.values() for port in ports
            if port.name in self.port_conflicts and isinstance(port.python_type, type)
        }

    def _unavailable_port(self, spec: NodeSpec) -> str:
        """Why ``spec`` cannot load because it uses a conflicting port type, or ""."""
        for kind, items in (("input", spec.inputs.values()), ("output", spec.outputs.values())):
            for item in items:
                name = item.port or (self._conflicted_classes.get(item.annotation, "")
                                     if isinstance(item.annotation, type) else "")
                if name in self.port_conflicts:
                    owners = " and ".join(repr(o) for o in self.port_conflicts[name])
                    return (f"its {kind} {item.name or '(return)'!r} has port type {name!r}, which {owners} "
                            f"both define; disable one with {DISABLE_ENV}=name")
        return ""

    def _check_requirements(self) -> None:
        """Note each plugin's missing optional dependencies (found without importing them)."""
        for name, function in self._each_impl("sfumato_requirements"):
            record = self.plugins[name]
            try:
                requirements = list(function() or ())
                for requirement in requirements:
                    if not isinstance(requirement, Requirement):
                        raise PluginError(f"sfumato_requirements returned {requirement!r}, not a Requirement")
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
                continue
            for requirement in requirements:
                if not requirement.distribution:
                    requirement = dataclasses.replace(requirement, distribution=record.distribution or "sfumato")
                if not requirement.is_installed():
                    record.missing.append(requirement)
            if record.missing and record.status == "ok":
                record.status = "needs-extra"

    def _register_codecs(self) -> None:
        staged: list[tuple[str, ValueCodec]] = []
        for name, function in self._each_impl("sfumato_value_codecs"):
            try:
                codecs = list(function() or ())
                for codec in codecs:
                    if not isinstance(codec, ValueCodec):
                        raise PluginError(f"sfumato_value_codecs returned {codec!r}, not a ValueCodec")
            except Exception as error:  # noqa: BLE001
                self._quarantine(name, error)
                continue
            staged.extend((name, codec) for codec in codecs)
        claims: dict[Any, list[str]] = {}
        for name, codec in staged:
            for key in (codec.name, codec.python_type):
                claims.setdefault(key, []).append(name)
        for name, codec in staged:
            clash = next((claims[key] for key in (codec.name, codec.python_type) if len(claims[key]) > 1), None)
            if clash:
                others = " and ".join(repr(o) for o in clash if o != name) or repr(name)
                self.plugins[name].add_error(f"value codec {codec.name!r} is also defined by {others}; "
                                             "its values are kept in memory only")
                continue
            self.codecs[codec.name] = codec
            self.plugins[name].provides.setdefault("codecs", []).append(codec.name)

    def install_hint(self, plugin: str, error: BaseException) -> MissingExtraError | None:
        """The error naming the ``pip install`` line when ``error`` is a missing optional dependency of ``plugin``."""
        record = self.plugins.get(plugin)
        for requirement in record.missing if record else ():
            if requirement.matches(error):
                return requirement.error(plugin)
        return None

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
        if node_id in self.unavailable:
            return f"node type {node_id!r} is unavailable: {self.unavailable[node_id]}"
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

    # -- events --------------------------------------------------------------

    def event_listeners(self) -> list[tuple[str, Callable[..., Any]]]:
        """The plugins' event hook functions with their plugin names (computed once)."""
        if self._event_listeners is None:
            self._event_listeners = self._each_impl("sfumato_run_event")
        return self._event_listeners

    def add_cli_commands(self, subparsers: Any) -> list[tuple[str, str]]:
        """Let plugins add subcommands; returns (plugin, error) for those that failed."""
        failures = []
        for name, function in self._each_impl("sfumato_cli_commands"):
            before = set(subparsers.choices)
            try:
                function(subparsers=subparsers)
            except Exception as error:  # noqa: BLE001
                failures.append((name, _one_line(error)))
            if name in self.plugins:
                self.plugins[name].provides["commands"] = sorted(set(subparsers.choices) - before)
            missing = self.plugins[name].missing if name in self.plugins else []
            for command in set(subparsers.choices) - before if missing else ():
                # The command is listed, and refuses to start with the line that installs what it needs.
                parser = subparsers.choices[command]
                handler = parser.get_default("handler")
                if handler is not None:
                    parser.set_defaults(handler=_refusing(handler, missing, name))
        return failures


def _refusing(function: Callable[..., Any], missing: list[Requirement], plugin: str) -> Callable[..., Any]:
    """``function``, but raising :class:`MissingExtraError` while a requirement is still missing."""
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for requirement in missing:
            if not requirement.is_installed():
                raise requirement.error(plugin)
        return function(*args, **kwargs)

    guarded.__wrapped__ = function  # type: ignore[attr-defined]
    return guarded


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry of installed plugins, loaded once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry.load()
        return _default
