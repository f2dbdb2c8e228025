"""Describing what plugins provide as JSON: node types (``sfumato nodes --json``, ``sfumato schema``,
the server), plugins (``sfumato plugins``) and model sources (``sfumato models``)."""

from __future__ import annotations

import json
from typing import Any

from .nodes import REQUIRED, NodeSpec


def _default_text(value: Any) -> Any:
    return None if value is REQUIRED else value


def node_as_dict(spec: NodeSpec) -> dict[str, Any]:
    """A JSON-able description of a node type."""
    return {
        "id": spec.id,
        "version": spec.version,
        "category": spec.category,
        "plugin": spec.plugin,
        "description": spec.description,
        "output_node": spec.output_node,
        "batched": spec.batch is not None,
        "class_node": spec.is_class,
        "volatile": spec.volatile,
        "cache": {"volatile": spec.volatile, "fingerprint": spec.fingerprint is not None,
                  "checks_entries": spec.is_cache_entry_valid is not None, "to_disk": spec.cacheable_to_disk},
        # Only a node taking a RunContext can read run settings; its declared ones join its signature.
        "context_keys": list(spec.context_keys) if spec.context_param else [],
        "inputs": [
            {"name": i.name, "type": i.port, "required": i.required, "default": _default_text(i.default),
             "description": i.description, **i.constraints()}
            for i in spec.inputs.values()
        ],
        "outputs": [{"name": o.name, "type": o.port, "description": o.description} for o in spec.outputs.values()],
    }


def node_input_schema(spec: NodeSpec) -> dict[str, Any]:
    """JSON Schema of a node's ``inputs`` object, literal-capable inputs typed by pydantic."""
    link = {"type": "object", "properties": {"from": {"type": "string", "pattern": r"^[^.]+\..+$"}},
            "required": ["from"], "additionalProperties": False}
    param = {"type": "object", "properties": {"param": {"type": "string"}}, "required": ["param"],
             "additionalProperties": False}
    properties = {}
    for item in spec.inputs.values():
        options: list[dict[str, Any]] = [link, param]
        try:
            literal = item.adapter().json_schema()
            options.append(literal)
        except Exception:  # noqa: BLE001 - non-JSON types only accept links
            pass
        entry: dict[str, Any] = {"anyOf": options}
        if item.description:
            entry["description"] = item.description
        if not item.required and item.default is not None:
            try:
                json.dumps(item.default)
                entry["default"] = item.default
            except TypeError:
                pass
        properties[item.name] = entry
    return {
        "type": "object", "title": spec.id, "description": spec.summary, "properties": properties,
        "required": [i.name for i in spec.inputs.values() if i.required], "additionalProperties": False,
    }


def plugin_as_dict(record: Any, registry: Any) -> dict[str, Any]:
    """What one plugin is and provides: its ``PluginRecord`` and everything it registered.

    ``registry`` is the :class:`~sfumato.Registry` holding it; CLI commands are
    listed only once the registry has added them to a parser (``add_cli_commands``).
    """
    provides = record.provides
    return {
        **record.as_dict(),
        "node_ids": sorted(record.node_ids),
        "port_types": sorted(n for n, owner in registry.ports.owners.items() if owner == record.name),
        "conversions": list(provides.get("conversions", [])),
        "codecs": list(provides.get("codecs", [])),
        "models": sorted(n for n, source in registry.models.items() if source.plugin == record.name),
        "commands": list(provides.get("commands", [])),
        "executors": list(provides.get("executors", [])),
        "graph_types": sorted(g.id for g in registry.graph_types.values() if g.plugin == record.name),
        "migrations": [f"{m.node_type} v{m.from_version} -> v{m.from_version + 1}"
                       for (_, _), m in sorted(registry.migrations.items()) if m.plugin == record.name],
    }


def model_as_dict(source: Any, registry: Any = None) -> dict[str, Any]:
    """A JSON-able description of a model source: its name, where its weights are, whether they exist.

    With the ``registry`` holding it, also why its declared generator node cannot run it, if it cannot.
    """
    try:
        path, problem = source.path(), ""
    except Exception as error:  # noqa: BLE001 - a plugin's lookup failing is listed, not fatal
        path, problem = None, f"{type(error).__name__}: {error}".splitlines()[0]
    return {
        "name": source.name,
        "plugin": source.plugin,
        "kind": source.kind,
        "description": source.description,
        "generator": getattr(source, "generator", "") or "",
        "family": getattr(source, "family", "") or "",
        "sha256": getattr(source, "sha256", "") or "",
        "path": str(path) if path is not None else None,
        "exists": path is not None and path.exists(),
        "problem": problem,
        "generator_problem": registry.model_problems.get(source.name, "") if registry is not None else "",
    }
