"""Versioned node entries and their migrations.

A node type has a version (``@node(..., version=2)``); a graph file may record,
in each node entry, the version it was written for (``"version": 1``). When the
installed node type is newer, the plugin's :class:`Migration` steps rewrite the
entry one version at a time — renamed inputs, removed inputs, defaults that
changed, or any function of the inputs — and every change is said in words.
A graph written for a newer version than the installed one is refused, naming
both versions: running it would silently mean something else.

A version step with no migration registered is compatible (a node may bump its
version because its results changed, with the same inputs). An entry with no
recorded version is taken as written for the installed version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import GraphIssue, GraphValidationError
from .document import Graph, Link, NodeEntry, Value, parse_input


@dataclass(frozen=True)
class Migration:
    """How a node entry of ``node_type`` goes from ``from_version`` to ``from_version + 1``.

    Applied in this order: ``renamed`` (old input name -> new), ``removed``
    inputs dropped, ``old_defaults`` written explicitly where the entry left
    the input unset (the default changed, and the graph meant the old one),
    ``update(inputs) -> inputs`` on the inputs as JSON, for anything else, then
    ``split`` for a node split in two (or more).

    ``split(inputs)`` returns the node's own new inputs under the key ``""``
    and each new node's entry (``{"type": ..., "inputs": {...}}``) under a
    suffix: the new node's id is ``NODE_SUFFIX``. Links among them are written
    ``{"from": "@SUFFIX.output"}`` (``"@.output"`` is the node itself).
    ``moved_outputs`` says where an output of the old node is now made
    (``{"value": "offset.value"}``): links from the rest of the graph follow.

    Args:
        node_type: the node type id, e.g. ``image.blur``.
        from_version: the version this step upgrades from.
        renamed: inputs that were renamed.
        removed: inputs that no longer exist.
        old_defaults: the old default of each input whose default changed (names after renaming).
        update: a function of the entry's inputs (JSON, after the steps above).
        split: splits the node in several (see above).
        moved_outputs: for a split, old output -> ``"SUFFIX.output"`` of the node now making it.
        note: what the step does, added to the change report.
    """

    node_type: str
    from_version: int
    renamed: Mapping[str, str] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    old_defaults: Mapping[str, Any] = field(default_factory=dict)
    update: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    split: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    moved_outputs: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    plugin: str = ""


@dataclass
class MigrationResult:
    """A graph brought to the installed node versions, and what that changed.

    Each change is a warning-severity :class:`GraphIssue` at the entry's
    ``version`` path: validation and runs report it, and it stops nothing.
    """

    graph: Graph
    changes: list[GraphIssue]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def index_migrations(migrations: Iterable[Migration]) -> dict[tuple[str, int], Migration]:
    """Migrations by ``(node type, from version)``; a step registered twice is an error."""
    found: dict[tuple[str, int], Migration] = {}
    for migration in migrations:
        key = (migration.node_type, migration.from_version)
        if key in found:
            raise ValueError(f"two migrations of {migration.node_type} from version {migration.from_version} "
                             f"(plugins {found[key].plugin!r} and {migration.plugin!r})")
        found[key] = migration
    return found


def migrate_graph(graph: Graph, versions: Mapping[str, int], migrations: Mapping[tuple[str, int], Migration],
                  *, stamp: bool = False) -> MigrationResult:
    """``graph`` with every node entry brought to the installed version of its type.

    ``versions`` maps node type ids to installed versions. The graph given is
    not modified. With ``stamp`` every entry of a known type records its
    version afterwards (what ``sfumato upgrade`` writes). Raises
    :class:`GraphValidationError` for entries written for a newer version.
    """
    issues: list[GraphIssue] = []
    changes: list[GraphIssue] = []
    nodes = dict(graph.document.nodes)
    inputs = dict(graph.inputs)
    #: (node, output) -> (node, output) now making it, for nodes split in two.
    moved: dict[tuple[str, str], tuple[str, str]] = {}
    for node_id, entry in graph.document.nodes.items():
        installed = versions.get(entry.type)
        if installed is None:
            continue  # unknown types are reported by validation
        written = entry.version
        if written is not None and written > installed:
            issues.append(GraphIssue(f"nodes.{node_id}.version",
                                     f"written for {entry.type} version {written}, but the installed {entry.type} "
                                     f"is version {installed}; upgrade the plugin that provides it", node_id))
            continue
        if written is not None and written < installed:
            refs = dict(graph.inputs.get(node_id, {}))
            said: list[str] = []
            for version in range(written, installed):
                step = migrations.get((entry.type, version))
                if step is not None:
                    refs = _apply(step, refs, said)
                if step is not None and step.split is not None:
                    refs = _split(step, node_id, refs, graph, nodes, inputs, moved, said, issues)
            inputs[node_id] = refs
            detail = "; ".join(said) if said else "no input changes"
            changes.append(GraphIssue(f"nodes.{node_id}.version",
                                      f"migrated from {entry.type} version {written} to {installed}: {detail}",
                                      node_id, "warning"))
        if written != installed and (stamp or written is not None):
            nodes[node_id] = entry.model_copy(update={"version": installed})
    if issues:
        raise GraphValidationError(issues, graph.source)
    if not changes and nodes == graph.document.nodes:
        return MigrationResult(graph, [])
    outputs = graph.document.outputs
    if moved:
        # Consumers of a split node's outputs read them where they are made now.
        split_off = set(nodes) - set(graph.document.nodes)  # their links to the split node are meant as written
        for node_id, refs in inputs.items():
            if node_id not in split_off and any(isinstance(ref, Link) and (ref.node, ref.output) in moved for ref in refs.values()):
                inputs[node_id] = {name: Link(*moved[(ref.node, ref.output)])
                                   if isinstance(ref, Link) and (ref.node, ref.output) in moved else ref
                                   for name, ref in refs.items()}
        outputs = {name: ".".join(moved.get(tuple(target.rsplit(".", 1)), tuple(target.rsplit(".", 1))))
                   for name, target in outputs.items()}
    document = graph.document.model_copy(update={"nodes": nodes, "outputs": outputs})
    migrated = dataclasses.replace(graph, document=document, inputs=inputs)
    return MigrationResult(migrated, changes)


def _apply(step: Migration, refs: dict[str, Any], said: list[str]) -> dict[str, Any]:
    for old, new in step.renamed.items():
        if old in refs:
            refs[new] = refs.pop(old)
            said.append(f"input {old!r} renamed to {new!r}")
    for name in step.removed:
        if name in refs:
            del refs[name]
            said.append(f"input {name!r} removed")
    for name, default in step.old_defaults.items():
        if name not in refs:
            refs[name] = Value(default)
            said.append(f"input {name!r} set to its old default {default!r}")
    if step.update is not None:
        raw = step.update({name: ref.as_json() for name, ref in refs.items()})
        refs = {}
        for name, value in raw.items():
            ref = parse_input(value)
            refs[name] = Value(value) if isinstance(ref, str) else ref
    if step.note:
        said.append(step.note)
    return refs


def _split(step: Migration, node_id: str, refs: dict[str, Any], graph: Graph, nodes: dict[str, NodeEntry],
           inputs: dict[str, dict[str, Any]], moved: dict[tuple[str, str], tuple[str, str]], said: list[str],
           issues: list[GraphIssue]) -> dict[str, Any]:
    """Apply ``step.split`` to one node: add the new nodes, note the moved outputs; the node's own new inputs."""
    assert step.split is not None
    parts = step.split({name: ref.as_json() for name, ref in refs.items()})

    def id_of(suffix: str) -> str:
        return f"{node_id}_{suffix}" if suffix else node_id

    def parsed(raw: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for name, value in raw.items():
            ref = parse_input(value)
            if isinstance(ref, Link) and ref.node.startswith("@"):
                ref = Link(id_of(ref.node[1:]), ref.output)
            result[name] = Value(value) if isinstance(ref, str) else ref
        return result

    own = parsed(parts.get("", {}))
    for suffix, part in parts.items():
        if not suffix:
            continue
        new_id = id_of(suffix)
        if new_id in nodes:
            issues.append(GraphIssue(f"nodes.{node_id}", f"migrating {node_id!r} splits off a node {new_id!r}, "
                                                         "but the graph has a node of that id; rename it", node_id))
            continue
        nodes[new_id] = NodeEntry(type=part["type"])
        inputs[new_id] = parsed(part.get("inputs", {}))
        said.append(f"split: new node {new_id!r} ({part['type']})")
    for output, target in step.moved_outputs.items():
        suffix, _, new_output = target.rpartition(".")
        moved[(node_id, output)] = (id_of(suffix), new_output)
        said.append(f"output {output!r} now comes from {id_of(suffix)}.{new_output}")
    return own


def with_recorded_versions(graph: Graph, recorded: Mapping[str, Any]) -> Graph:
    """``graph`` with the node versions an image's metadata recorded (``{type: {"version": N}}``).

    Entries that already say their version keep it; a PNG made with an older
    node version is then migrated like an older graph file.
    """
    nodes = dict(graph.document.nodes)
    changed = False
    for node_id, entry in graph.document.nodes.items():
        made_by = recorded.get(entry.type)
        version = made_by.get("version") if isinstance(made_by, dict) else None
        if entry.version is None and isinstance(version, int) and not isinstance(version, bool) and version >= 1:
            nodes[node_id] = entry.model_copy(update={"version": version})
            changed = True
    if not changed:
        return graph
    return dataclasses.replace(graph, document=graph.document.model_copy(update={"nodes": nodes}))


def upgrade_graph(graph: Graph, registry: Any) -> MigrationResult:
    """``graph`` migrated to the node versions installed in ``registry``, every entry stamped with its version.

    What ``sfumato upgrade`` writes. Subgraph files are not followed: each file
    is upgraded on its own. Raises :class:`GraphValidationError` for an entry
    written for a newer node version than the installed one.
    """
    return migrate_graph(graph, registry.node_versions(), registry.migrations, stamp=True)
