"""Subgraphs: a graph used as a node type.

A node whose ``type`` is a registered graph type (a plugin's
``sfumato_graph_types`` hook) or ``graph:NAME`` (a shipped graph by name, or a
graph file beside the including one: ``graph:blur-twice.json``) stands for a
whole graph. That graph's ``params`` and declared ``inputs`` are the node's
inputs; its ``outputs`` are the node's outputs.

Subgraphs are expanded when a graph is planned: every inner node becomes a node
of one flat graph, its id prefixed with the subgraph node's id
(``upscale/sharpen``), its ``{"param": ...}`` and ``{"input": ...}`` references
replaced by what the outer node gives them (a link, a parameter of the outer
graph, a literal) or by the inner parameter's default. Why expand rather than
run a subgraph as one node: the flat graph is an ordinary graph, so the one
scheduler, the cache, validation and run reports need nothing new — every inner
node has its own signature, and changing one subgraph input re-runs only the
inner nodes that depend on it; independent inner branches run in parallel with
the outer ones; and a failing inner node is named by its full path.

A problem found inside is reported with both paths: the outer input that caused
it, and the inner node input it reached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GraphIssue, GraphValidationError
from .document import Graph, GraphDocument, GraphInputRef, InputRef, Link, NodeEntry, ParamRef, Value
from .params import check_value

#: Separates a subgraph node's id from its inner nodes' ids in the flat graph.
SEPARATOR = "/"
#: ``"type": "graph:NAME"`` uses a graph file (or a shipped graph) as a node type.
GRAPH_PREFIX = "graph:"
#: Subgraphs nest at most this deep (a guard against runaway inclusion).
MAX_DEPTH = 16
#: The most nodes a graph may expand to: subgraphs that include others several times multiply
#: (ten copies, nested five deep, is 100,000 nodes), and a graph file must not make planning run away.
MAX_EXPANDED_NODES = 50_000
#: A bounded loop over a body graph, unrolled when planned (see :meth:`_Expander.add_loop`).
LOOP_TYPE = "flow.loop"
#: The most iterations a ``flow.loop`` may declare.
MAX_ITERATIONS = 100
#: The node type the unrolled loop chooses between iterations with (from the flow plugin).
_CHOOSE_TYPE = "flow.if"


@dataclass
class GraphType:
    """A graph usable as a node type (what ``sfumato_graph_types`` returns).

    Args:
        id: the node type id graphs use, dotted like any node id (``zoo.shapes_card``).
        graph: the graph, or the path of its file.
        description: shown by ``sfumato nodes`` (default: the graph's description).
    """

    id: str
    graph: Graph | str | Path
    description: str = ""
    plugin: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.graph, Graph):
            self.graph = Graph.load(self.graph)
        if not self.description:
            self.description = self.graph.document.description  # type: ignore[union-attr]

    @property
    def document(self) -> GraphDocument:
        return self.graph.document  # type: ignore[union-attr]


def is_subgraph_type(type_name: str, graph_types: Mapping[str, GraphType]) -> bool:
    """Whether a node entry of this type is a subgraph (or a loop over one)."""
    return type_name in graph_types or type_name.startswith(GRAPH_PREFIX) or type_name == LOOP_TYPE


@dataclass
class Expansion:
    """A graph with its subgraphs expanded.

    Attributes:
        graph: the flat graph (the input graph itself when it has no subgraph).
        origins: ``(flat node, input)`` -> ``(outer path, inner path)`` for inner
            inputs fed from outside, so that a problem there names both.
        subgraphs: flat id of each subgraph node -> its type.
        issues: problems of the subgraph nodes themselves (unknown input, self-inclusion).
    """

    graph: Graph
    origins: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    subgraphs: dict[str, str] = field(default_factory=dict)
    issues: list[GraphIssue] = field(default_factory=list)

    def translate(self, issue: GraphIssue) -> GraphIssue:
        """An issue of the flat graph, said with the outer path when it came from outside."""
        if not self.origins or issue.node is None or SEPARATOR not in issue.node:
            return issue
        prefix = f"nodes.{issue.node}.inputs."
        if issue.path.startswith(prefix):
            name = issue.path[len(prefix):].split(".", 1)[0]
            origin = self.origins.get((issue.node, name))
            if origin is not None:
                outer_path, inner_path = origin
                subgraph = issue.node.rpartition(SEPARATOR)[0]
                outer_node = outer_path[len("nodes."):].rpartition(".inputs.")[0]
                return dataclasses.replace(
                    issue, path=outer_path, node=outer_node,
                    message=f"{issue.message} (inside subgraph {subgraph!r} "
                            f"({self.subgraphs.get(subgraph, '?')}): {inner_path})")
        return issue


def expand_subgraphs(graph: Graph, graph_types: Mapping[str, GraphType]) -> Expansion:
    """Expand every subgraph node of ``graph`` into prefixed inner nodes; see the module docstring."""
    if not any(is_subgraph_type(entry.type, graph_types) for entry in graph.nodes.values()):
        return Expansion(graph)
    return _Expander(graph, graph_types).run()


@dataclass(frozen=True, slots=True)
class _Bound:
    """What feeds one input of a subgraph: a flat reference, and the outer path that set it (if any)."""

    ref: InputRef
    origin: str | None


class _Expander:
    def __init__(self, graph: Graph, graph_types: Mapping[str, GraphType]) -> None:
        self.root = graph
        self.graph_types = graph_types
        self.nodes: dict[str, NodeEntry] = {}
        self.inputs: dict[str, dict[str, InputRef]] = {}
        self.expansion = Expansion(graph)
        #: flat subgraph id -> its outputs as flat links (possibly to other subgraphs, resolved at the end).
        self.sub_outputs: dict[str, dict[str, Link]] = {}
        #: Subgraph and loop nodes that could not be expanded (already reported): links to them are dropped.
        self.failed: set[str] = set()
        self.input_errors: list[GraphIssue] = list(graph.input_errors)
        self.broken: set[str] = set(graph.broken_nodes)
        self._files: dict[Path, Graph] = {}

    def run(self) -> Expansion:
        root_key = _file_key(self.root.source)
        self.flatten(self.root, "", (root_key,) if root_key else (), None)
        for node_id, refs in self.inputs.items():
            for name, ref in list(refs.items()):
                if isinstance(ref, Link) and ref.node in self.failed:
                    del refs[name]
                    self.broken.add(node_id)  # its consequences would only repeat the problem
                    continue
                if isinstance(ref, Link) and ref.node in self.sub_outputs:
                    resolved = self.resolve(ref, f"nodes.{node_id}.inputs.{name}", node_id)
                    if resolved is None:
                        del refs[name]
                    else:
                        refs[name] = resolved
        outputs = {}
        for name, target in self.root.document.outputs.items():
            node, _, output = target.rpartition(".")
            if node in self.failed:
                continue
            link = self.resolve(Link(node, output), f"outputs.{name}", node) if node in self.sub_outputs \
                else Link(node, output)
            if link is not None:
                outputs[name] = f"{link.node}.{link.output}"
        document = self.root.document.model_copy(update={"nodes": self.nodes, "outputs": outputs})
        self.expansion.graph = Graph(document, self.inputs, self.root.source, tuple(self.input_errors),
                                     self.root.broken_params, frozenset(self.broken))
        return self.expansion

    def issue(self, path: str, message: str, node: str | None) -> None:
        self.expansion.issues.append(GraphIssue(path, message, node))

    def resolve(self, link: Link, path: str, node: str) -> Link | None:
        """Follow a link to a subgraph's output down to the inner node that makes it."""
        for _ in range(MAX_DEPTH + 1):
            outputs = self.sub_outputs.get(link.node)
            if outputs is None:
                return link
            inner = outputs.get(link.output)
            if inner is None:
                names = ", ".join(sorted(outputs)) or "none"
                self.issue(path, f"subgraph {link.node!r} ({self.expansion.subgraphs[link.node]}) has no output "
                                 f"{link.output!r} (outputs: {names})", node)
                return None
            link = inner
        return link  # pragma: no cover - depth is bounded when expanding

    def graph_of(self, type_name: str, including: Graph) -> tuple[str, Graph] | str:
        """The key (for cycle checks) and graph of a subgraph type, or why there is none."""
        registered = self.graph_types.get(type_name)
        if registered is not None:
            return registered.id, registered.graph  # type: ignore[return-value]
        reference = type_name[len(GRAPH_PREFIX):]
        from .shipped import shipped_graph_path

        if not reference or Path(reference).is_absolute() or ".." in Path(reference).parts:
            return f"{reference!r}: a subgraph file is named relative to the including graph, inside its folder"

        base = Path(including.source).parent if _file_key(including.source) else None
        candidate = base / reference if base is not None else None
        if candidate is None or not candidate.is_file():
            candidate = shipped_graph_path(reference)
        if candidate is None:
            where = f" beside {including.source}" if base is not None else ""
            return f"no graph file {reference!r}{where} and no shipped graph of that name"
        key = candidate.resolve()
        if key not in self._files:
            try:
                self._files[key] = Graph.load(candidate)
            except GraphValidationError as error:
                return f"the subgraph file {candidate} is not a valid graph: {error.issues[0].path}: " \
                       f"{error.issues[0].message}"
        return str(key), self._files[key]

    def flatten(self, graph: Graph, prefix: str, chain: tuple[str, ...], bound: dict[str, _Bound] | None) -> None:
        """Add ``graph``'s nodes under ``prefix``; ``bound`` feeds its params and inputs (None: the root)."""
        for node_id, entry in graph.nodes.items():
            flat_id = prefix + node_id
            if flat_id in self.nodes or flat_id in self.expansion.subgraphs:
                # A graph may hold ids with '/' (an expanded graph, as a PNG stores it); one meeting
                # an inner node's id is ambiguous.
                self.issue(f"nodes.{flat_id}", f"node id {flat_id!r} is also the id of a subgraph's inner node "
                                               f"({SEPARATOR!r} separates a subgraph's id from its nodes' ids)",
                           flat_id)
                continue
            refs = graph.inputs.get(node_id, {})
            if entry.type == LOOP_TYPE:
                self.add_loop(graph, node_id, flat_id, refs, prefix, chain, bound)
                continue
            if is_subgraph_type(entry.type, self.graph_types):
                self.add_subgraph(graph, node_id, flat_id, entry, refs, prefix, chain, bound)
                continue
            self.nodes[flat_id] = entry
            flat_refs: dict[str, InputRef] = {}
            for name, ref in refs.items():
                if bound is not None and not _declared(graph, ref):
                    kind = "parameter" if isinstance(ref, ParamRef) else "input"
                    self.issue(f"nodes.{flat_id}.inputs.{name}",
                               f"uses graph {kind} {ref.name!r}, which the subgraph does not declare",  # type: ignore[union-attr]
                               flat_id)
                    continue
                translated = self.translate(ref, prefix, bound)
                if translated is None:
                    # What should feed it is already reported on the subgraph node; its
                    # consequences here (a missing required input) would only repeat it.
                    self.broken.add(flat_id)
                    continue
                flat_refs[name] = translated.ref
                if translated.origin is not None:
                    self.expansion.origins[(flat_id, name)] = (translated.origin, f"nodes.{node_id}.inputs.{name}")
            self.inputs[flat_id] = flat_refs
        if prefix:
            self.input_errors.extend(GraphIssue(_prefixed(issue.path, prefix), issue.message,
                                                prefix + issue.node if issue.node else None)
                                     for issue in graph.input_errors)
            self.broken.update(prefix + node for node in graph.broken_nodes)

    def translate(self, ref: InputRef, prefix: str, bound: dict[str, _Bound] | None) -> _Bound | None:
        if isinstance(ref, Link):
            return _Bound(Link(prefix + ref.node, ref.output), None)
        if isinstance(ref, (ParamRef, GraphInputRef)) and bound is not None:
            # An unset required one is reported on the subgraph node.
            return bound.get(ref.name)
        return _Bound(ref, None)

    def add_subgraph(self, graph: Graph, node_id: str, flat_id: str, entry: NodeEntry, refs: dict[str, InputRef],
                     prefix: str, chain: tuple[str, ...], bound: dict[str, _Bound] | None) -> None:
        found = self.graph_of(entry.type, graph)
        if isinstance(found, str):
            self.issue(f"nodes.{flat_id}.type", f"subgraph type {entry.type!r}: {found}", flat_id)
            self.failed.add(flat_id)
            return
        key, inner = found
        if key in chain:
            names = [Path(k).name if SEPARATOR in k or "\\" in k else k for k in (*chain, key)]
            self.issue(f"nodes.{flat_id}.type", f"subgraph type {entry.type!r} includes itself: "
                                                f"{' -> '.join(names)}", flat_id)
            self.failed.add(flat_id)
            return
        if len(chain) > MAX_DEPTH:
            self.issue(f"nodes.{flat_id}.type", f"subgraphs nest more than {MAX_DEPTH} deep", flat_id)
            self.failed.add(flat_id)
            return
        document = inner.document
        if len(self.nodes) + len(document.nodes) > MAX_EXPANDED_NODES:
            self.issue(f"nodes.{flat_id}.type", f"expanding subgraph {entry.type!r} here makes the graph larger "
                                                f"than {MAX_EXPANDED_NODES:,} nodes", flat_id)
            self.failed.add(flat_id)
            return
        self.expansion.subgraphs[flat_id] = entry.type
        inner_bound: dict[str, _Bound] = {}
        for name, ref in refs.items():
            path = f"nodes.{flat_id}.inputs.{name}"
            if name not in document.params and name not in document.inputs:
                names = ", ".join(sorted([*document.params, *document.inputs])) or "none"
                self.issue(path, f"subgraph {entry.type!r} has no input {name!r} (inputs: {names})", flat_id)
                continue
            translated = self.translate(ref, prefix, bound)
            if translated is None:
                continue
            if name in document.inputs and isinstance(translated.ref, Value):
                self.issue(path, f"input {name!r} of subgraph {entry.type!r} takes {document.inputs[name].type}; "
                                 "link it to another node's output", flat_id)
                continue
            if name in document.params and isinstance(translated.ref, Value):
                try:
                    translated = _Bound(Value(check_value(document.params[name], translated.ref.value)),
                                        translated.origin)
                except ValueError as error:
                    self.issue(path, f"value {translated.ref.value!r:.80} is invalid for parameter {name!r} of "
                                     f"subgraph {entry.type!r}: {error}", flat_id)
                    continue
            inner_bound[name] = _Bound(translated.ref, translated.origin or path)
        for name, declaration in document.params.items():
            if name in inner_bound or name in refs:
                continue
            if declaration.default is not None and not declaration.required:
                inner_bound[name] = _Bound(Value(declaration.default), None)
            else:
                self.issue(f"nodes.{flat_id}.inputs", f"missing required input {name!r} ({declaration.type}) "
                                                      f"of subgraph {entry.type!r}", flat_id)
        for name, declaration in document.inputs.items():
            if name not in refs:
                self.issue(f"nodes.{flat_id}.inputs", f"missing required input {name!r} ({declaration.type}) "
                                                      f"of subgraph {entry.type!r}", flat_id)
        inner_prefix = flat_id + SEPARATOR
        self.sub_outputs[flat_id] = {name: Link(inner_prefix + target.rpartition(".")[0], target.rpartition(".")[2])
                                     for name, target in document.outputs.items()}
        self.flatten(inner, inner_prefix, (*chain, key), inner_bound)


    def add_loop(self, graph: Graph, node_id: str, flat_id: str, refs: dict[str, InputRef], prefix: str,
                 chain: tuple[str, ...], bound: dict[str, _Bound] | None) -> None:
        """``flow.loop``: its ``body`` graph repeated up to ``max_iterations`` times, unrolled.

        Iteration ``k`` is a subgraph node ``loop/k`` whose ``state`` input is
        the ``state`` output of iteration ``k - 1`` (the loop's own ``state``
        input for the first); its other inputs are the loop's. Each output of
        the loop is chosen by a chain of ``flow.if`` nodes on the iterations'
        ``done`` outputs, so iteration ``k + 1`` runs only when iteration ``k``
        is not done: the iterations that did not run are skipped branches.
        The state is typed by the body's ``state`` declaration, checked like
        any link.
        """
        body, count = refs.get("body"), refs.get("max_iterations")
        if not isinstance(body, Value) or not isinstance(body.value, str) or not body.value:
            self.issue(f"nodes.{flat_id}.inputs.body", "flow.loop needs 'body': the graph to repeat, a literal "
                                                       "graph type or graph:NAME", flat_id)
            self.failed.add(flat_id)
            return
        if not isinstance(count, Value) or not isinstance(count.value, int) or isinstance(count.value, bool) \
                or not 1 <= count.value <= MAX_ITERATIONS:
            self.issue(f"nodes.{flat_id}.inputs.max_iterations",
                       f"flow.loop needs 'max_iterations': a literal integer from 1 to {MAX_ITERATIONS} "
                       "(a loop is always bounded)", flat_id)
            self.failed.add(flat_id)
            return
        found = self.graph_of(body.value, graph) if is_subgraph_type(body.value, self.graph_types) \
            else f"{body.value!r} is no graph type; use a plugin's graph type or graph:NAME"
        if isinstance(found, str):
            self.issue(f"nodes.{flat_id}.inputs.body", f"flow.loop body: {found}", flat_id)
            self.failed.add(flat_id)
            return
        document = found[1].document
        missing = [f"{kind} {name!r}" for kind, name, there in (
            ("input", "state", "state" in document.params or "state" in document.inputs),
            ("output", "state", "state" in document.outputs), ("output", "done", "done" in document.outputs))
            if not there]
        if missing:
            self.issue(f"nodes.{flat_id}.inputs.body", f"the body of a flow.loop declares an input 'state', and "
                                                       f"outputs 'state' (the next state) and 'done' (true to stop); "
                                                       f"{body.value!r} has no {', no '.join(missing)}", flat_id)
            self.failed.add(flat_id)
            return
        self.expansion.subgraphs[flat_id] = f"{LOOP_TYPE} over {body.value}"
        passed = {name: ref for name, ref in refs.items() if name not in ("body", "max_iterations")}
        total = count.value
        for k in range(1, total + 1):
            iteration = dict(passed)
            if k > 1:
                iteration["state"] = Link(f"{node_id}{SEPARATOR}{k - 1}", "state")
            self.add_subgraph(graph, f"{node_id}{SEPARATOR}{k}", f"{flat_id}{SEPARATOR}{k}",
                              NodeEntry(type=body.value), iteration, prefix, chain, bound)
        outputs: dict[str, Link] = {}
        for output in document.outputs:
            chosen = Link(f"{flat_id}{SEPARATOR}{total}", output)
            for k in range(total - 1, 0, -1):
                step = f"{flat_id}{SEPARATOR}{k}"
                choose = f"{flat_id}{SEPARATOR}{output}_after_{k}"
                self.nodes[choose] = NodeEntry(type=_CHOOSE_TYPE)
                self.inputs[choose] = {"condition": Link(step, "done"), "if_true": Link(step, output),
                                       "if_false": chosen}
                chosen = Link(choose, "value")
            outputs[output] = chosen
        self.sub_outputs[flat_id] = outputs


def _declared(graph: Graph, ref: InputRef) -> bool:
    if isinstance(ref, ParamRef):
        return ref.name in graph.params
    if isinstance(ref, GraphInputRef):
        return ref.name in graph.document.inputs
    return True


def _file_key(source: str) -> str:
    """The resolved path of a graph's file, or "" when it did not come from a file."""
    if not source or source.startswith("<"):
        return ""
    path = Path(source)
    return str(path.resolve()) if path.suffix == ".json" and path.is_file() else ""


def _prefixed(path: str, prefix: str) -> str:
    return f"nodes.{prefix}{path[len('nodes.'):]}" if path.startswith("nodes.") else f"{prefix}{path}"


def subgraph_node_types(graph: Graph, graph_types: Mapping[str, GraphType]) -> dict[str, Any]:
    """The subgraph nodes of ``graph`` (not nested): node id -> type."""
    return {node_id: entry.type for node_id, entry in graph.nodes.items()
            if is_subgraph_type(entry.type, graph_types)}


_PYTHON_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool,
    "list[str]": list[str], "list[int]": list[int], "list[float]": list[float], "json": Any,
}


def graph_type_spec(graph_type: GraphType, graph_types: Mapping[str, GraphType], nodes: Mapping[str, Any],
                    ports: Any) -> Any:
    """The :class:`NodeSpec` that lists a graph type beside node types (``sfumato nodes``, schemas).

    Its inputs are the graph's parameters (typed by their declared types) and
    declared inputs; its outputs are the graph's outputs, typed by the inner
    nodes that make them. It is never called: planning expands it.
    """
    from ..plugin.nodes import REQUIRED, InputSpec, NodeSpec, OutputSpec
    from .params import PARAM_PORTS

    document = graph_type.document
    inputs: dict[str, InputSpec] = {}
    for name, declaration in document.params.items():
        default = declaration.default if declaration.default is not None and not declaration.required else REQUIRED
        inputs[name] = InputSpec(name, _PYTHON_TYPES[declaration.type], default, declaration.description,
                                 choices=tuple(declaration.choices) if declaration.choices else None,
                                 port=PARAM_PORTS[declaration.type], literal_type=_PYTHON_TYPES[declaration.type])
    for name, declared in document.inputs.items():
        port = declared.type if declared.type in ports.types else "Any"
        inputs[name] = InputSpec(name, Any, REQUIRED, declared.description, port=port)
    outputs = {name: OutputSpec(name, Any, port=_output_port(graph_type, target, graph_types, nodes, ()))
               for name, target in document.outputs.items()}

    def expanded_when_planned(**_: Any) -> Any:
        raise RuntimeError(f"graph type {graph_type.id} is expanded into its nodes when planned, not called")

    description = graph_type.description or f"The graph {graph_type.graph.name} as a node."  # type: ignore[union-attr]
    return NodeSpec(id=graph_type.id, version=1, category="graph",
                    description=f"{description}\n\nA subgraph of {len(document.nodes)} nodes, expanded when planned.",
                    inputs=inputs, outputs=outputs, implementation=expanded_when_planned, single_output=False,
                    plugin=graph_type.plugin)


def _output_port(graph_type: GraphType, target: str, graph_types: Mapping[str, GraphType],
                 nodes: Mapping[str, Any], seen: tuple[str, ...]) -> str:
    node_id, _, output = target.rpartition(".")
    entry = graph_type.document.nodes.get(node_id)
    if entry is None or graph_type.id in seen:
        return "Any"
    inner = graph_types.get(entry.type)
    if inner is not None:
        inner_target = inner.document.outputs.get(output)
        return _output_port(inner, inner_target, graph_types, nodes, (*seen, graph_type.id)) if inner_target \
            else "Any"
    spec = nodes.get(entry.type)
    item = spec.outputs.get(output) if spec is not None else None
    return item.port if item is not None and item.port else "Any"
