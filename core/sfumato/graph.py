"""Graph files: the pydantic model of the JSON format, loading, saving and a builder.

::

    {"version": 1,
     "params": {"prompt": {"type": "str", "default": "a red circle"}},
     "nodes": {"clean": {"type": "text.normalize", "inputs": {"text": {"param": "prompt"}}},
               "save":  {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}},
     "outputs": {"image": "gen.images"}}

An input value is a literal, a link ``{"from": "node.output"}``, a graph
parameter ``{"param": "name"}``, or ``{"value": ...}`` for a literal that would
otherwise look like a link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .collector import collector_paused
from .errors import GraphIssue, GraphValidationError

FORMAT_VERSION = 1
PARAM_TYPES = ("str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "json")


class ParamDeclaration(BaseModel):
    """A graph-level parameter that callers set (``--set name=value``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "json"] = Field(
        description="the value type"
    )
    default: Any = Field(None, description="used when the caller does not set it; omit to make it required")
    description: str = ""
    choices: list[Any] | None = Field(None, description="the allowed values")
    minimum: float | None = None
    maximum: float | None = None
    required: bool = Field(False, description="the caller must set it (implied when there is no default)")


class NodeEntry(BaseModel):
    """One node of a graph file."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="the node type id, e.g. image.sharpen")
    inputs: dict[str, Any] = Field(default_factory=dict, description="literal, {from}, {param} or {value}")
    title: str = Field("", description="an optional human title")
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form editor data (layout); ignored by the engine")


class GraphDocument(BaseModel):
    """The JSON document of a graph file."""

    model_config = ConfigDict(extra="forbid", title="sfumato graph")

    version: Literal[1] = Field(description="graph file format version")
    name: str = Field("", description="a short name, used in output file names")
    description: str = ""
    params: dict[str, ParamDeclaration] = Field(default_factory=dict)
    nodes: dict[str, NodeEntry]
    outputs: dict[str, str] = Field(default_factory=dict, description="graph outputs: name -> 'node.output'")


# -- input references -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """An input fed by another node's output."""

    node: str
    output: str

    def as_json(self) -> dict[str, str]:
        return {"from": f"{self.node}.{self.output}"}


@dataclass(frozen=True, slots=True)
class ParamRef:
    """An input fed by a graph parameter."""

    name: str

    def as_json(self) -> dict[str, str]:
        return {"param": self.name}


@dataclass(frozen=True, slots=True)
class Value:
    """A literal input value."""

    value: Any

    def as_json(self) -> Any:
        if isinstance(self.value, dict) and len(self.value) == 1 and next(iter(self.value)) in ("from", "param", "value"):
            return {"value": self.value}
        return self.value


InputRef = Union[Link, ParamRef, Value]


def parse_input(raw: Any) -> InputRef | str:
    """Turn a raw JSON input into a reference; a string result is an error message."""
    if isinstance(raw, dict) and len(raw) == 1:
        (key, value), = raw.items()
        if key == "from":
            if not isinstance(value, str) or value.count(".") < 1:
                return f"a link must be written {{'from': 'node_id.output_name'}}, got {value!r}"
            node, _, output = value.rpartition(".")
            return Link(node, output)
        if key == "param":
            if not isinstance(value, str):
                return f"a parameter reference must be written {{'param': 'name'}}, got {value!r}"
            return ParamRef(value)
        if key == "value":
            return Value(value)
    return Value(raw)


# -- loading ---------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _line_of_second(text: str, key: str) -> int:
    needle = json.dumps(key)
    first = text.find(needle)
    second = text.find(needle, first + 1)
    return text.count("\n", 0, second if second >= 0 else max(first, 0)) + 1


def _pydantic_issues(error: ValidationError) -> list[GraphIssue]:
    issues = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        node = location[1] if len(location) > 1 and location[0] == "nodes" else None
        issues.append(GraphIssue(".".join(location) or "$", item["msg"], node))
    return issues


def parse_graph_text(text: str, source: str = "<graph>") -> "Graph":
    """Parse a graph from JSON text; raises :class:`GraphValidationError` on bad structure."""
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as duplicate:
        line = _line_of_second(text, duplicate.key)
        raise GraphValidationError(
            [GraphIssue(f"line {line}", f"key {duplicate.key!r} appears twice in the same object; "
                                         "node ids and keys must be unique")], source) from None
    except json.JSONDecodeError as error:
        raise GraphValidationError(
            [GraphIssue(f"line {error.lineno}, column {error.colno}", f"invalid JSON: {error.msg}")], source
        ) from None
    return Graph.from_dict(data, source=source)


@dataclass
class Graph:
    """A parsed graph file: its document plus parsed input references.

    Structure is checked here; node types, ports and types are checked by
    :func:`sfumato.validate_graph` against the installed plugins.
    """

    document: GraphDocument
    inputs: dict[str, dict[str, InputRef]]
    source: str = "<graph>"
    input_errors: tuple[GraphIssue, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, source: str = "<graph>") -> "Graph":
        """Parse a graph document (a dict as read from JSON); structure errors raise."""
        with collector_paused():
            return cls._from_dict(data, source)

    @classmethod
    def _from_dict(cls, data: Any, source: str) -> "Graph":
        if isinstance(data, dict) and data.get("version") not in (None, FORMAT_VERSION):
            raise GraphValidationError([GraphIssue(
                "version", f"graph format version {data.get('version')!r} is not supported; this sfumato reads version {FORMAT_VERSION}"
            )], source)
        try:
            document = GraphDocument.model_validate(data)
        except ValidationError as error:
            raise GraphValidationError(_pydantic_issues(error), source) from None
        inputs: dict[str, dict[str, InputRef]] = {}
        errors: list[GraphIssue] = []
        for node_id, entry in document.nodes.items():
            parsed: dict[str, InputRef] = {}
            for name, raw in entry.inputs.items():
                ref = parse_input(raw)
                if isinstance(ref, str):
                    errors.append(GraphIssue(f"nodes.{node_id}.inputs.{name}", ref, node_id))
                else:
                    parsed[name] = ref
            inputs[node_id] = parsed
        return cls(document, inputs, source, tuple(errors))

    @classmethod
    def load(cls, path: str | Path) -> "Graph":
        """Read a graph file (``.json``)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GraphValidationError([GraphIssue("$", f"no graph file at {path}")], str(path)) from None
        except UnicodeDecodeError as error:
            raise GraphValidationError([GraphIssue("$", f"not UTF-8 text: {error}")], str(path)) from None
        graph = parse_graph_text(text, source=str(path))
        if not graph.document.name:
            graph.document.name = path.stem
        return graph

    @property
    def name(self) -> str:
        return self.document.name or "graph"

    @property
    def nodes(self) -> dict[str, NodeEntry]:
        return self.document.nodes

    @property
    def params(self) -> dict[str, ParamDeclaration]:
        return self.document.params

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able document, with inputs written back in canonical form."""
        data = self.document.model_dump(mode="json", exclude_defaults=True)
        data["version"] = FORMAT_VERSION
        data["nodes"] = {}
        for node_id, entry in self.document.nodes.items():
            node: dict[str, Any] = {"type": entry.type}
            node["inputs"] = {name: ref.as_json() for name, ref in self.inputs[node_id].items()}
            if entry.title:
                node["title"] = entry.title
            if entry.meta:
                node["meta"] = entry.meta
            data["nodes"][node_id] = node
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the graph as JSON (atomically)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    def edges(self) -> list[tuple[str, str, str, str]]:
        """``(source node, output, target node, input)`` for every link."""
        return [
            (ref.node, ref.output, node_id, name)
            for node_id, refs in self.inputs.items()
            for name, ref in refs.items()
            if isinstance(ref, Link)
        ]


def graph_json_schema() -> dict[str, Any]:
    """The JSON Schema of graph files (without per-node input schemas)."""
    schema = GraphDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
