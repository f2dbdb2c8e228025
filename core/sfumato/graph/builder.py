"""Build graphs in Python; they save to the same JSON files the CLI runs.

::

    g = GraphBuilder("shapes")
    prompt = g.param("prompt", "str", default="a red circle")
    clean = g.add("text.normalize", text=prompt)
    g.add("image.save", images=gen["images"])
    g.build().save("shapes.json")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .document import FORMAT_VERSION, Graph


@dataclass(frozen=True)
class ParamHandle:
    """A graph parameter, usable as a node input."""

    name: str


@dataclass(frozen=True)
class OutputHandle:
    """One output of a node, usable as another node's input."""

    node: str
    output: str


@dataclass(frozen=True)
class NodeHandle:
    """A node added to a builder; ``handle["images"]`` is its output ``images``."""

    id: str

    def __getitem__(self, output: str) -> OutputHandle:
        return OutputHandle(self.id, output)


class GraphBuilder:
    """Accumulates params, nodes and outputs, then builds a :class:`Graph`."""

    def __init__(self, name: str = "", description: str = "") -> None:
        self.name = name
        self.description = description
        self._params: dict[str, dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, str] = {}

    def param(self, name: str, type: str = "str", *, default: Any = None, description: str = "",
              choices: list[Any] | None = None, minimum: float | None = None,
              maximum: float | None = None, required: bool = False) -> ParamHandle:
        """Declare a graph parameter and return a handle to feed inputs with."""
        declaration: dict[str, Any] = {"type": type}
        for key, value in (("default", default), ("description", description), ("choices", choices),
                           ("minimum", minimum), ("maximum", maximum)):
            if value not in (None, ""):
                declaration[key] = value
        if required:
            declaration["required"] = True
        self._params[name] = declaration
        return ParamHandle(name)

    def add(self, node_type: str, node_id: str | None = None, *, node_title: str = "", **inputs: Any) -> NodeHandle:
        """Add a node; inputs are literals, :class:`OutputHandle`\\ s or :class:`ParamHandle`\\ s.

        ``node_title`` is a human title for editors (named so that it never
        shadows a node input called ``title``).
        """
        if node_id is None:
            stem = node_type.rsplit(".", 1)[-1]
            node_id, counter = stem, 2
            while node_id in self._nodes:
                node_id, counter = f"{stem}{counter}", counter + 1
        if node_id in self._nodes:
            raise ValueError(f"node id {node_id!r} is already used in this graph")
        entry: dict[str, Any] = {"type": node_type, "inputs": {k: self._encode(v) for k, v in inputs.items()}}
        if node_title:
            entry["title"] = node_title
        self._nodes[node_id] = entry
        return NodeHandle(node_id)

    def output(self, name: str, handle: OutputHandle) -> None:
        """Declare a graph output."""
        self._outputs[name] = f"{handle.node}.{handle.output}"

    @staticmethod
    def _encode(value: Any) -> Any:
        if isinstance(value, OutputHandle):
            return {"from": f"{value.node}.{value.output}"}
        if isinstance(value, ParamHandle):
            return {"param": value.name}
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("from", "param", "value"):
            return {"value": value}
        return value

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": FORMAT_VERSION}
        if self.name:
            data["name"] = self.name
        if self.description:
            data["description"] = self.description
        if self._params:
            data["params"] = self._params
        data["nodes"] = self._nodes
        if self._outputs:
            data["outputs"] = self._outputs
        return data

    def build(self) -> Graph:
        """The graph (structure checked; types are checked when it is validated or run)."""
        return Graph.from_dict(self.to_dict(), source=f"<builder {self.name or 'graph'}>")
