"""Graphs as Python functions: ``sfumato.load_function("text-to-image")``.

::

    make = sfumato.load_function("text-to-image")
    inspect.signature(make)   # (*, prompt: str = 'a red circle', steps: int = 20, ...) -> ImageBatch
    images = make(prompt="a blue square")

The signature is built from the graph: its parameters are keyword-only
arguments typed by their declared types (with their defaults; required ones
have none), and its outputs give the return annotation — the output's value
type when there is one output, else a ``NamedTuple`` of them. Calling runs the
graph on an :class:`~sfumato.Engine` (one per function unless given), so
repeated calls reuse its cache and loaded models.

The same typing, as JSON Schema, describes the graph to callers that speak
JSON (``sfumato serve``'s ``POST /api/graphs/{name}/run``):
:attr:`GraphFunction.input_schema` (the parameters, with the range each
numeric one really has once the inputs it feeds narrowed it) and
:attr:`GraphFunction.output_schema` (the outputs as a run report holds them:
JSON values as they are, other values such as images as a short summary);
:meth:`GraphFunction.parameter_problems` checks values against it, naming
each bad parameter and the value given.
"""

from __future__ import annotations

import copy
import inspect
import keyword
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import GraphValidationError
from ..graph.document import Graph, ParamDeclaration
from ..graph.params import Bound, ParamRange, param_problems, reconcile_ranges
from ..graph.shipped import resolve_graph_path
from ..registry import Registry, default_registry
from .engine import Engine
from .report import RunResult

_PYTHON_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool,
    "list[str]": list[str], "list[int]": list[int], "list[float]": list[float], "json": Any,
}
#: JSON Schema of each declared parameter type.
_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
    "bool": {"type": "boolean"}, "list[str]": {"type": "array", "items": {"type": "string"}},
    "list[int]": {"type": "array", "items": {"type": "integer"}},
    "list[float]": {"type": "array", "items": {"type": "number"}}, "json": {},
}
_SCALAR_SCHEMAS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"}, bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
    type(None): {"type": "null"},
}
_ANY_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}


class GraphFunction:
    """A graph called like a function; see the module docstring.

    Attributes:
        graph: the graph it runs.
        engine: the engine it runs on.
        last_result: the :class:`RunResult` of the latest call (its report, all values).
        input_schema: JSON Schema of the parameters (types, defaults, choices, ranges).
        output_schema: JSON Schema of the outputs as a run report holds them.
    """

    def __init__(self, graph: Graph, engine: Engine) -> None:
        self.graph = graph
        self.engine = engine
        self.last_result: RunResult | None = None
        self._ports, self._ranges = _analyse_function(graph, engine.registry)
        self._returns = _return_type(graph, self._ports, engine.registry)
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=_PYTHON_TYPES[declaration.type],
                               default=(declaration.default if declaration.default is not None
                                        and not declaration.required else inspect.Parameter.empty))
             for name, declaration in graph.params.items()],
            return_annotation=self._returns)
        self.__name__ = self.__qualname__ = _identifier(graph.name) or "graph"
        self.__doc__ = graph.document.description or f"Run the graph {graph.name!r}."
        #: JSON Schema of the parameters (an object; ``required`` lists those without a default).
        self.input_schema: dict[str, Any] = _input_schema(graph, self._ranges)
        #: JSON Schema of the outputs as a run report holds them (see :func:`json_schema_of`).
        self.output_schema: dict[str, Any] = {
            "title": f"{graph.name} outputs", "type": "object",
            "properties": {name: json_schema_of(python_type) for name, python_type in self._ports.items()}}

    def parameter_problems(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """What is wrong with these parameter values: ``[{"parameter", "value", "message"}]``, empty when nothing.

        Unknown names, wrong types, values outside the choices or outside the
        parameter's range (its own bounds narrowed by the inputs it feeds), and
        required parameters left unset (``value`` None) are all reported, each
        message naming the parameter and the value given.
        """
        problems = []
        _, issues = param_problems(self.graph, params)
        reported = set()
        for issue in issues:
            name = issue.path.split(".", 1)[1]
            reported.add(name)
            shown = _short(params[name]) if name in params else None
            given = f" (given {shown})" if shown is not None and shown not in issue.message else ""
            problems.append({"parameter": name, "value": params.get(name), "message": issue.message + given})
        for name, found in self._ranges.items():
            problem = found.problem(params[name]) if name in params and name not in reported else None
            if problem is not None:
                problems.append({"parameter": name, "value": params[name],
                                 "message": f"parameter {name!r}: {problem}"})
        return problems

    def __repr__(self) -> str:
        return f"<graph function {self.__name__}{self.__signature__}>"

    def run(self, **params: Any) -> RunResult:
        """Run with these parameter values; the full :class:`RunResult` (outputs, report)."""
        self.__signature__.bind(**params)  # a TypeError naming an unknown or missing argument, as for any function
        self.last_result = self.engine.run(self.graph, params)
        return self.last_result

    def __call__(self, **params: Any) -> Any:
        outputs = self.run(**params).outputs
        if not self._ports:
            return None
        if len(self._ports) == 1:
            return next(iter(outputs.values()))
        if isinstance(self._returns, type) and issubclass(self._returns, tuple):
            return self._returns(**outputs)
        return outputs


def load_function(graph: str | Path | Graph, *, engine: Engine | None = None,
                  registry: Registry | None = None) -> GraphFunction:
    """A graph (a file, a shipped graph's name, or a :class:`Graph`) as a typed callable.

    Raises :class:`GraphValidationError` when the graph is not valid with the
    installed node types (checked once, here, with its default parameters).
    """
    if not isinstance(graph, Graph):
        graph = Graph.load(resolve_graph_path(str(graph)))
    engine = engine or Engine(registry or default_registry())
    return GraphFunction(graph, engine)


def _analyse_function(graph: Graph, registry: Registry) -> tuple[dict[str, Any], dict[str, ParamRange]]:
    """Each graph output's Python type and each numeric parameter's range, from the validated (expanded) graph."""
    from .planning import _analyse, _param_feeds

    issues, planned, _, flat, _ = _analyse(graph, registry, None)
    errors = [issue for issue in issues if issue.severity != "warning" and "is required" not in issue.message]
    if errors:
        raise GraphValidationError(errors, graph.source)
    from .flow import same_type_ports

    specs = {node_id: node.spec for node_id, node in planned.items()}
    typed, _ = same_type_ports(flat, specs, registry)
    ranges, _ = reconcile_ranges(flat, _param_feeds(flat, specs))
    ports = {}
    for name, target in flat.document.outputs.items():
        node_id, _, output = target.rpartition(".")
        item = planned[node_id].spec.outputs[output]
        if (node_id, output) in typed:
            ports[name] = _python_type(typed[(node_id, output)], registry)
        elif isinstance(item.annotation, type) and item.annotation is not object:
            ports[name] = item.annotation  # as the node declares it: float, ImageBatch
        else:
            ports[name] = _python_type(item.port, registry)
    return ports, ranges


def _python_type(port: str, registry: Registry) -> Any:
    python_type = registry.ports.get(port).python_type if port in registry.ports.types else object
    if isinstance(python_type, tuple):
        return python_type[0]  # the type the port is named for: Float accepts (float, int) and means float
    return Any if python_type is object else python_type


def _return_type(graph: Graph, types: dict[str, Any], registry: Registry) -> Any:
    if not types:
        return None
    if len(types) == 1:
        return next(iter(types.values()))
    if all(_identifier(name) == name for name in types):
        return NamedTuple(f"{_identifier(graph.name).title().replace('_', '') or 'Graph'}Outputs",  # type: ignore[misc]
                          list(types.items()))
    return dict[str, Any]


def _identifier(name: str) -> str:
    text = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    if not text or text[0].isdigit() or keyword.iskeyword(text):
        return ""
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _param_schema(declaration: ParamDeclaration, found: ParamRange | None) -> dict[str, Any]:
    schema = copy.deepcopy(_PARAM_SCHEMAS[declaration.type])
    if declaration.description:
        schema["description"] = declaration.description
    if declaration.default is not None and not declaration.required:
        schema["default"] = declaration.default
    # Choices and bounds hold for each item of a list parameter (as the engine checks them).
    target = schema.setdefault("items", {}) if declaration.type.startswith("list[") else schema
    if declaration.choices is not None:
        target["enum"] = list(declaration.choices)
    # The range the engine enforces: the declared one, narrowed by the inputs the parameter feeds.
    found = found or ParamRange(declaration.type,
                                Bound(declaration.minimum) if declaration.minimum is not None else None,
                                Bound(declaration.maximum) if declaration.maximum is not None else None)
    low, high = found.low, found.high
    if low is not None:
        target["minimum" if low.inclusive else "exclusiveMinimum"] = _number(low.value)
    if high is not None:
        target["maximum" if high.inclusive else "exclusiveMaximum"] = _number(high.value)
    return schema


def _input_schema(graph: Graph, ranges: dict[str, ParamRange]) -> dict[str, Any]:
    required = [name for name, d in graph.params.items() if d.required or d.default is None]
    schema: dict[str, Any] = {
        "title": f"{graph.name} parameters", "type": "object", "additionalProperties": False,
        "properties": {name: _param_schema(d, ranges.get(name)) for name, d in graph.params.items()}}
    if required:
        schema["required"] = required
    return schema


def json_schema_of(python_type: Any) -> dict[str, Any]:
    """JSON Schema of a value of ``python_type`` as a run report holds it (``RunReport.outputs``).

    JSON types (``str``, ``int``, ``float``, ``bool``, lists and string-keyed
    dicts of them, unions, ``Any``) are described as they are. Any other type
    (an ``ImageBatch``, an ``Embedding``) is reported as a short text such as
    ``"<ImageBatch x4>"``, since JSON cannot hold the value itself.
    """
    if python_type is Any:
        return {}
    if python_type in _SCALAR_SCHEMAS:
        return dict(_SCALAR_SCHEMAS[python_type])
    origin, args = typing.get_origin(python_type), typing.get_args(python_type)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema_of(arg) for arg in args]}
    if origin in (list, tuple) or python_type in (list, tuple):
        item = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else Any
        # A report keeps a list of scalars as it is, and summarises any other list.
        if item in _SCALAR_SCHEMAS:
            return {"type": "array", "items": json_schema_of(item)}
        if item is Any:
            return {"anyOf": [{"type": "array", "items": _ANY_SCALAR}, _summary_schema(python_type)]}
        return _summary_schema(python_type)
    if origin is dict or python_type is dict:
        value = args[1] if len(args) == 2 else Any
        if value in _SCALAR_SCHEMAS:
            return {"type": "object", "additionalProperties": json_schema_of(value)}
        if value is Any:
            return {"anyOf": [{"type": "object", "additionalProperties": _ANY_SCALAR}, _summary_schema(python_type)]}
        return _summary_schema(python_type)
    return _summary_schema(python_type)


def _summary_schema(python_type: Any) -> dict[str, Any]:
    name = getattr(python_type, "__name__", None) or str(python_type)
    return {"type": "string", "description": f"a summary of the {name} value, such as '<{name} x4>' "
                                             f"(JSON cannot hold the value; files it was saved to are listed apart)",
            "x-sfumato-type": name}
