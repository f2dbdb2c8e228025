"""Graph files: the pydantic model of the JSON format, loading, saving and a builder.

::

    {"version": 1,
     "params": {"prompt": {"type": "str", "default": "a red circle"}},
     "nodes": {"clean": {"type": "text.normalize", "inputs": {"text": {"param": "prompt"}}},
               "save":  {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}},
     "outputs": {"image": "gen.images"}}

An input value is a literal, a link ``{"from": "node.output"}``, a graph
parameter ``{"param": "name"}``, a graph input ``{"input": "name"}`` (set only
when the graph is used as a node type, see :mod:`sfumato.graph.subgraph`), or
``{"value": ...}`` for a literal that would otherwise look like a link.

A node entry may record the ``version`` of its node type that it was written
for; loading it with a newer version applies the plugins' migrations (see
:mod:`sfumato.graph.migrations`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import GraphIssue, GraphValidationError
from .collector import collector_paused
from .jsontext import JSONTextError, json_problems, parse_json

FORMAT_VERSION = 1
PARAM_TYPES = ("str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "json")
NUMERIC_PARAM_TYPES = ("int", "float", "list[int]", "list[float]")
#: Graph files larger than this are refused before they are read.
MAX_GRAPH_BYTES = 64 * 2**20


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

    @model_validator(mode="after")
    def _bounds_need_numbers(self) -> "ParamDeclaration":
        # A bound on a text is meaningless, and comparing one later raises TypeError.
        if (self.minimum is not None or self.maximum is not None) and self.type not in NUMERIC_PARAM_TYPES:
            raise ValueError(f"minimum and maximum apply to numbers only, not to a {self.type} parameter")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        return self


class NodeEntry(BaseModel):
    """One node of a graph file."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="the node type id, e.g. image.sharpen")
    inputs: dict[str, Any] = Field(default_factory=dict, description="literal, {from}, {param} or {value}")
    title: str = Field("", description="an optional human title")
    version: int | None = Field(None, ge=1, description="the version of the node type this entry was written for")
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form editor data (layout); ignored by the engine")


class InputDeclaration(BaseModel):
    """A typed input of a graph used as a node type: only an outer graph's link sets it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="the port type, e.g. Image or Conditioning")
    description: str = ""


class GraphDocument(BaseModel):
    """The JSON document of a graph file."""

    model_config = ConfigDict(extra="forbid", title="sfumato graph")

    version: Literal[1] = Field(description="graph file format version")
    name: str = Field("", description="a short name, used in output file names")
    description: str = ""
    params: dict[str, ParamDeclaration] = Field(default_factory=dict)
    inputs: dict[str, InputDeclaration] = Field(
        default_factory=dict, description="typed inputs linked by an outer graph when this graph is a node type")
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
class GraphInputRef:
    """An input fed by one of the graph's declared ``inputs`` (a subgraph's link from outside)."""

    name: str

    def as_json(self) -> dict[str, str]:
        return {"input": self.name}


@dataclass(frozen=True, slots=True)
class Value:
    """A literal input value."""

    value: Any

    def as_json(self) -> Any:
        if isinstance(self.value, dict) and len(self.value) == 1 and next(iter(self.value)) in ("from", "param", "input", "value"):
            return {"value": self.value}
        return self.value


InputRef = Union[Link, ParamRef, GraphInputRef, Value]


def parse_input(raw: Any) -> InputRef | str:
    """Turn a raw JSON input into a reference; a string result is an error message."""
    if isinstance(raw, dict) and len(raw) == 1:
        (key, value), = raw.items()
        if key == "from":
            if not isinstance(value, str) or "." not in value:
                return f"a link must be written {{'from': 'node_id.output_name'}}, got {value!r}"
            node, _, output = value.rpartition(".")
            return Link(node, output)
        if key == "param":
            if not isinstance(value, str):
                return f"a parameter reference must be written {{'param': 'name'}}, got {value!r}"
            return ParamRef(value)
        if key == "input":
            if not isinstance(value, str):
                return f"a graph input reference must be written {{'input': 'name'}}, got {value!r}"
            return GraphInputRef(value)
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


def _node_of(path: str) -> str | None:
    """The node id a JSON path (``nodes.ID...``) points into."""
    if not path.startswith("nodes."):
        return None
    return path[len("nodes."):].split(".", 1)[0].split("[", 1)[0] or None


def _pydantic_issues(error: ValidationError, prefix: tuple[str, ...] = ()) -> list[GraphIssue]:
    issues = []
    for item in error.errors(include_url=False, include_input=False):
        location = [*prefix, *(str(part) for part in item["loc"])]
        node = location[1] if len(location) > 1 and location[0] == "nodes" else None
        message = item["msg"].removeprefix("Value error, ")
        issues.append(GraphIssue(".".join(location) or "$", message, node))
    return issues


def parse_graph_text(text: str, source: str = "<graph>") -> "Graph":
    """Parse a graph from JSON text; raises :class:`GraphValidationError` on bad structure."""
    try:
        data = parse_json(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as duplicate:
        line = _line_of_second(text, duplicate.key)
        raise GraphValidationError(
            [GraphIssue(f"line {line}", f"key {duplicate.key!r:.80} appears twice in the same object; "
                                         "node ids and keys must be unique")], source) from None
    except JSONTextError as error:
        message = error.message
        if error.where == "$" and not text.strip():
            message = 'the graph file is empty; a graph file is a JSON object: {"version": 1, "nodes": {...}}'
        raise GraphValidationError([GraphIssue(error.where, message)], source) from None
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
    #: Parameters and nodes whose own entry is malformed (already in ``input_errors``);
    #: validation skips them rather than report their consequences again.
    broken_params: frozenset[str] = frozenset()
    broken_nodes: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, data: Any, source: str = "<graph>") -> "Graph":
        """Parse a graph document (a dict as read from JSON).

        Raises :class:`GraphValidationError` when the document as a whole is
        unusable (not an object, not JSON data, a bad top-level key). A
        malformed parameter or node entry does not stop parsing: its problems
        are kept in ``input_errors`` so that validation reports them beside
        every other problem of the graph.
        """
        with collector_paused():
            return cls._from_dict(data, source)

    @classmethod
    def _from_dict(cls, data: Any, source: str) -> "Graph":
        if not isinstance(data, dict):
            raise GraphValidationError([GraphIssue(
                "$", f'a graph is a JSON object {{"version": 1, "nodes": {{...}}}}, not a {_json_type(data)}')], source)
        unsafe = json_problems(data)
        if unsafe:
            raise GraphValidationError([GraphIssue(path, problem, _node_of(path)) for path, problem in unsafe], source)
        if data.get("version") not in (None, FORMAT_VERSION):
            raise GraphValidationError([GraphIssue(
                "version", f"graph format version {data.get('version')!r} is not supported; this sfumato reads version {FORMAT_VERSION}"
            )], source)
        entry_issues: list[GraphIssue] = []
        broken: dict[str, set[str]] = {"params": set(), "nodes": set()}
        try:
            document = GraphDocument.model_validate(data)
        except ValidationError as error:
            document, entry_issues = _validate_entries(data, error, broken, source)
        inputs: dict[str, dict[str, InputRef]] = {}
        errors: list[GraphIssue] = list(entry_issues)
        for node_id, entry in document.nodes.items():
            parsed: dict[str, InputRef] = {}
            for name, raw in entry.inputs.items():
                ref = parse_input(raw)
                if isinstance(ref, str):
                    errors.append(GraphIssue(f"nodes.{node_id}.inputs.{name}", ref, node_id))
                else:
                    parsed[name] = ref
            inputs[node_id] = parsed
        return cls(document, inputs, source, tuple(errors), frozenset(broken["params"]), frozenset(broken["nodes"]))

    @classmethod
    def load(cls, path: str | Path) -> "Graph":
        """Read a graph file (``.json``)."""
        path = Path(path)
        try:
            if path.is_dir():
                found = sorted(p.name for p in path.glob("*.json"))[:5]
                hint = f" (graph files in it: {', '.join(found)})" if found else ""
                raise GraphValidationError([GraphIssue("$", f"{path} is a folder, not a graph file{hint}")], str(path))
            size = path.stat().st_size
            if size > MAX_GRAPH_BYTES:
                raise GraphValidationError([GraphIssue(
                    "$", f"{path} is {size:,} bytes; graph files are at most {MAX_GRAPH_BYTES:,} bytes")], str(path))
            # utf-8-sig: a byte-order mark some editors write is not an error.
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise GraphValidationError([GraphIssue("$", f"no graph file at {path}")], str(path)) from None
        except UnicodeDecodeError as error:
            raise GraphValidationError([GraphIssue(
                "$", f"not UTF-8 text: byte {error.start} cannot be decoded; save the file as UTF-8")], str(path)) from None
        except OSError as error:
            raise GraphValidationError([GraphIssue("$", f"cannot read {path}: {error.strerror or error}")],
                                       str(path)) from None
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
            if entry.version is not None:
                node["version"] = entry.version
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


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


_PLACEHOLDERS: dict[str, dict[str, Any]] = {"params": {"type": "json"}, "nodes": {"type": ""}}


def _validate_entries(data: dict[str, Any], error: ValidationError, broken: dict[str, set[str]],
                      source: str) -> tuple[GraphDocument, list[GraphIssue]]:
    """Keep parsing past malformed parameter and node entries.

    Each malformed entry's problems become issues and the entry is replaced by
    a placeholder (remembered in ``broken``), so a misspelt key in one node
    does not hide the rest of the graph's problems. Problems at the top level
    still raise, with every entry problem found.
    """
    issues = _pydantic_issues(error)
    patched = dict(data)
    top_level = []
    for issue in issues:
        section, _, rest = issue.path.partition(".")
        key = rest.split(".", 1)[0]
        if section in _PLACEHOLDERS and rest and isinstance(data.get(section), dict) and key in data[section]:
            if key not in broken[section]:
                broken[section].add(key)
                patched[section] = {**patched[section], key: _PLACEHOLDERS[section]}
        else:
            top_level.append(issue)
    if top_level:
        raise GraphValidationError(issues, source) from None
    try:
        return GraphDocument.model_validate(patched), issues
    except ValidationError as second:  # pragma: no cover - placeholders are valid entries
        raise GraphValidationError(issues + _pydantic_issues(second), source) from None


def graph_json_schema() -> dict[str, Any]:
    """The JSON Schema of graph files (without per-node input schemas)."""
    schema = GraphDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
