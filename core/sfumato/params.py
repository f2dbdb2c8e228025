"""Graph parameters: checking declarations, parsing ``--set`` strings, resolving values."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import GraphIssue, ParameterError
from .graph import Graph, ParamDeclaration

_PYTHON_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool,
    "list[str]": list[str], "list[int]": list[int], "list[float]": list[float], "json": Any,
}

#: The port type a parameter of each declared type feeds.
PARAM_PORTS: dict[str, str] = {
    "str": "Text", "int": "Int", "float": "Float", "bool": "Bool",
    "list[str]": "TextList", "list[int]": "JSON", "list[float]": "JSON", "json": "Any",
}


@lru_cache(maxsize=None)
def _adapter(type_name: str) -> TypeAdapter:
    return TypeAdapter(_PYTHON_TYPES[type_name])


def check_value(declaration: ParamDeclaration, value: Any) -> Any:
    """Validate ``value`` against a declaration; raise ``ValueError`` with the reason."""
    if declaration.type in ("int", "float") and isinstance(value, bool):
        raise ValueError(f"expected {declaration.type}, got a bool")
    try:
        value = _adapter(declaration.type).validate_python(value, strict=declaration.type != "float")
    except ValidationError as error:
        raise ValueError("; ".join(e["msg"] for e in error.errors())) from None
    if declaration.choices is not None and value not in declaration.choices:
        raise ValueError(f"{value!r} is not one of {declaration.choices}")
    if declaration.minimum is not None and value < declaration.minimum:
        raise ValueError(f"{value!r} is below the minimum {declaration.minimum:g}")
    if declaration.maximum is not None and value > declaration.maximum:
        raise ValueError(f"{value!r} is above the maximum {declaration.maximum:g}")
    return value


def parse_text_value(declaration: ParamDeclaration, text: str) -> Any:
    """Parse a command-line string for a parameter of the declared type."""
    if declaration.type == "str":
        return text
    if declaration.type.startswith("list[") and not text.lstrip().startswith("["):
        items = [item.strip() for item in text.split(",") if item.strip()]
        return items if declaration.type == "list[str]" else [json.loads(item) for item in items]
    if declaration.type == "bool" and text.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return text.lower() in ("true", "yes", "1", "on")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if declaration.type == "json":
            return text
        raise ValueError(f"{text!r} is not a valid {declaration.type}") from None


def declaration_issues(graph: Graph) -> list[GraphIssue]:
    """Problems in the graph's own parameter declarations (bad defaults, choices)."""
    issues = []
    for name, declaration in graph.params.items():
        if declaration.default is None:
            continue
        try:
            check_value(declaration, declaration.default)
        except ValueError as error:
            issues.append(GraphIssue(f"params.{name}.default", f"default {declaration.default!r} is invalid: {error}"))
    return issues


def resolve_params(graph: Graph, given: dict[str, Any], *, from_text: bool = False) -> dict[str, Any]:
    """Merge caller values over defaults; raise :class:`ParameterError` listing every problem.

    With ``from_text`` the given values are command-line strings to parse.
    """
    problems: list[str] = []
    resolved: dict[str, Any] = {}
    for name in given:
        if name not in graph.params:
            known = ", ".join(sorted(graph.params)) or "none"
            problems.append(f"unknown parameter {name!r} (this graph's parameters: {known})")
    for name, declaration in graph.params.items():
        if name in given:
            value = given[name]
            try:
                if from_text and isinstance(value, str):
                    value = parse_text_value(declaration, value)
                resolved[name] = check_value(declaration, value)
            except ValueError as error:
                problems.append(f"parameter {name!r} ({declaration.type}): {error}")
        elif declaration.default is not None and not declaration.required:
            resolved[name] = declaration.default
        else:
            problems.append(f"parameter {name!r} ({declaration.type}) is required; set it with --set {name}=...")
    if problems:
        raise ParameterError("; ".join(problems))
    return resolved
