"""Describing node types as JSON: for ``sfumato nodes --json``, ``sfumato schema`` and the server."""

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
