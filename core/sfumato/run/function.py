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
"""

from __future__ import annotations

import inspect
import keyword
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import GraphValidationError
from ..graph.document import Graph
from ..graph.shipped import resolve_graph_path
from ..registry import Registry, default_registry
from .engine import Engine
from .report import RunResult

_PYTHON_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool,
    "list[str]": list[str], "list[int]": list[int], "list[float]": list[float], "json": Any,
}


class GraphFunction:
    """A graph called like a function; see the module docstring.

    Attributes:
        graph: the graph it runs.
        engine: the engine it runs on.
        last_result: the :class:`RunResult` of the latest call (its report, all values).
    """

    def __init__(self, graph: Graph, engine: Engine) -> None:
        self.graph = graph
        self.engine = engine
        self.last_result: RunResult | None = None
        self._ports = _output_ports(graph, engine.registry)
        self._returns = _return_type(graph, self._ports, engine.registry)
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=_PYTHON_TYPES[declaration.type],
                               default=(declaration.default if declaration.default is not None
                                        and not declaration.required else inspect.Parameter.empty))
             for name, declaration in graph.params.items()],
            return_annotation=self._returns)
        self.__name__ = self.__qualname__ = _identifier(graph.name) or "graph"
        self.__doc__ = graph.document.description or f"Run the graph {graph.name!r}."

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


def _output_ports(graph: Graph, registry: Registry) -> dict[str, Any]:
    """Each graph output's Python type, from the validated (expanded) graph."""
    from .planning import _analyse

    issues, planned, _, flat, _ = _analyse(graph, registry, None)
    errors = [issue for issue in issues if issue.severity != "warning" and "is required" not in issue.message]
    if errors:
        raise GraphValidationError(errors, graph.source)
    from .flow import same_type_ports

    typed, _ = same_type_ports(flat, {node_id: node.spec for node_id, node in planned.items()}, registry)
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
    return ports


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
