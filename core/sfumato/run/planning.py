"""Validation and planning: from a graph file to an ordered, signed plan.

:func:`validate_graph` collects every problem at once. :func:`plan_run`
resolves parameters, keeps only the nodes the outputs need, orders them
topologically and computes each node's cache signature from its type, version,
literal inputs and its parents' signatures, once per node, in one linear pass.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GraphIssue, GraphValidationError, ParameterError
from ..graph.collector import collector_paused
from ..graph.document import Graph, GraphInputRef, Link, ParamRef
from ..graph.migrations import migrate_graph
from ..graph.params import PARAM_PORTS, check_value, declaration_issues, param_problems, reconcile_ranges
from ..graph.subgraph import expand_subgraphs
from .flow import same_type_ports
from ..plugin.limits import LimitExceededError
from ..plugin.nodes import NodeSpec, ValidationContext
from ..plugin.paths import path_issues
from ..registry import Registry


@dataclass(slots=True)
class Edge:
    """A link feeding one input of a planned node from another node's output.

    Made only by planning and never changed. (Not ``frozen``: a frozen
    dataclass is four times as slow to make, and a plan makes one per link.)
    """

    input: str
    source: str
    output: str
    #: Converts each value as it passes (a registered port conversion), or ``None``.
    convert: Callable[[Any], Any] | None = None
    #: Why a value arriving here is not of the input's port type, or ``None`` (see
    #: ``PortTypeRegistry.checker``); ``None`` instead of a function when the port takes any value.
    check: Callable[[Any], str | None] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.input, self.source, self.output)


@dataclass(slots=True)
class PlannedNode:
    """One node of a plan with its resolved literal inputs and incoming links."""

    id: str
    spec: NodeSpec
    literals: dict[str, Any]
    links: list[Edge]
    signature: str = ""
    #: ``(output, check)`` for each output whose port checks its values (see :class:`Edge`).
    output_checks: tuple[tuple[str, Callable[[Any], str | None]], ...] = ()


@dataclass
class Plan:
    """What a run will do: needed nodes in order, with signatures."""

    graph: Graph
    params: dict[str, Any]
    nodes: dict[str, PlannedNode]
    order: list[str]
    targets: list[str]
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    seed: int = 0
    #: Validation warnings (``GraphIssue`` with severity ``"warning"``): reported, not fatal.
    warnings: list[GraphIssue] = field(default_factory=list)
    #: The graph with its subgraphs expanded (``outer/inner`` node ids); ``None`` when it has none.
    flat: Graph | None = None
    #: What migrating older node entries to the installed node versions changed (also in ``warnings``).
    migrations: list[GraphIssue] = field(default_factory=list)

    @property
    def flat_graph(self) -> Graph:
        """The graph whose nodes the plan runs: subgraphs expanded into prefixed inner nodes."""
        return self.flat if self.flat is not None else self.graph


#: One encoder for every signature part: ``json.dumps`` with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> str:
    if not value and type(value) is dict:
        return "{}"  # most nodes of a large graph take only links
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError):
        return repr(value)


class _Dag:
    """Who feeds whom among a graph's nodes: the little of a directed graph planning needs.

    Successors and predecessors keep insertion order, and :meth:`order` is
    Kahn's algorithm by generations, so the order is the one ``networkx``'s
    ``topological_sort`` gives for the same insertions (plans, and so run
    order and events, are as before), at a fraction of the cost per node.
    """

    __slots__ = ("_order", "pred", "succ")

    def __init__(self, nodes: Any) -> None:
        self.succ: dict[str, dict[str, None]] = {node: {} for node in nodes}
        self.pred: dict[str, dict[str, None]] = {node: {} for node in self.succ}
        self._order: list[str] | None = None

    def add_edge(self, source: str, target: str) -> None:
        self.succ[source][target] = None
        self.pred[target][source] = None
        self._order = None

    def order(self) -> list[str]:
        """The nodes in topological order; those on or behind a cycle are left out."""
        if self._order is None:
            pred, succ = self.pred, self.succ
            indegree = {node: len(sources) for node, sources in pred.items() if sources}
            ready = [node for node, sources in pred.items() if not sources]
            order: list[str] = []
            while ready:
                generation, ready = ready, []
                for node in generation:
                    for child in succ[node]:
                        left = indegree[child] - 1
                        if left:
                            indegree[child] = left
                        else:
                            del indegree[child]
                            ready.append(child)
                order.extend(generation)
            self._order = order
        return self._order

    def has_cycle(self) -> bool:
        return len(self.order()) < len(self.succ)


class Suggestions:
    """"Did you mean" over a set of names, in about constant time per question.

    difflib compares a name with every option; for 2,000 dangling links in a
    2,000-node graph that is four million comparisons (38 s measured). Up to
    ``direct`` options are all compared, as before. Above that, only the
    options nearest in sorted order by prefix and by suffix are: a typo
    leaves one end of a name intact, so its neighbours there include the name
    meant. Answers are remembered per name.
    """

    def __init__(self, options: Any, *, direct: int = 300, window: int = 12) -> None:
        self._options = list(options)
        self._direct = direct
        self._window = window
        self._memo: dict[str, str | None] = {}
        self._by_prefix: list[str] | None = None
        self._by_suffix: list[str] | None = None

    def _candidates(self, name: str) -> list[str]:
        if len(self._options) <= self._direct:
            return self._options
        if self._by_prefix is None:
            self._by_prefix = sorted(self._options)
            self._by_suffix = sorted(option[::-1] for option in self._options)
        found: set[str] = set()
        for ordered, key, flip in ((self._by_prefix, name, False), (self._by_suffix, name[::-1], True)):
            at = bisect.bisect_left(ordered, key)
            for option in ordered[max(0, at - self._window): at + self._window]:
                found.add(option[::-1] if flip else option)
        return sorted(found)

    def closest(self, name: str) -> str | None:
        """The option most like ``name`` (difflib ratio at least 0.5), or ``None``."""
        if name not in self._memo:
            close = difflib.get_close_matches(name, self._candidates(name), n=1, cutoff=0.5)
            self._memo[name] = close[0] if close else None
        return self._memo[name]

    def hint(self, name: str) -> str:
        """``; did you mean 'x'?`` or an empty string."""
        close = self.closest(name)
        return f"; did you mean {close!r}?" if close else ""


def _closest(name: str, options: Any) -> str:
    return Suggestions(options).hint(name)


def _short(value: Any, width: int = 80) -> str:
    """``repr`` of a value, cut for messages (a value may be a megabyte of text)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _cut(text: str, width: int) -> str:
    """A message cut to ``width`` characters."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _at(node_id: str, name: str) -> str:
    """The path of a node's input in messages (built only for a problem: planning is per input)."""
    return f"nodes.{node_id}.inputs.{name}"


def _describe_inputs(spec: NodeSpec) -> str:
    return ", ".join(f"{i.name} ({i.port})" for i in spec.inputs.values()) or "none"


def _describe_outputs(spec: NodeSpec) -> str:
    return ", ".join(f"{o.name} ({o.port})" for o in spec.outputs.values()) or "none"


def _analyse(graph: Graph, registry: Registry, params: dict[str, Any] | None,
             value_issues: list[GraphIssue] | None = None,
             ) -> tuple[list[GraphIssue], dict[str, PlannedNode], Any, Graph, list[GraphIssue]]:
    """Check a graph against the registry; also resolve literals and links.

    Subgraphs are expanded first (see :mod:`sfumato.graph.subgraph`), then
    node entries written for older node versions are migrated (see
    :mod:`sfumato.graph.migrations`). Returns the issues, planned nodes, DAG,
    the flat graph and the migration notes.
    """
    expansion = expand_subgraphs(graph, registry.graph_types)
    flat, notes = expansion.graph, []
    try:
        migrated = migrate_graph(flat, registry.node_versions(), registry.migrations)
        flat, notes = migrated.graph, migrated.changes
    except GraphValidationError as error:  # written for newer node versions than installed
        expansion.issues.extend(error.issues)
    issues, planned, dag = _analyse_flat(flat, registry, params, value_issues)
    if expansion.issues or expansion.origins:
        issues = expansion.issues + [expansion.translate(issue) for issue in issues]
    return issues + notes, planned, dag, flat, notes


def _analyse_flat(graph: Graph, registry: Registry, params: dict[str, Any] | None,
                  value_issues: list[GraphIssue] | None = None,
                  ) -> tuple[list[GraphIssue], dict[str, PlannedNode], Any]:
    """The checks of :func:`_analyse` on a graph without subgraphs.

    A parameter value outside its range (its own bounds narrowed by the inputs
    it feeds) is one issue at ``params.NAME``, put in ``value_issues`` when
    given (the caller's values: a :class:`ParameterError`), else among the
    issues (the declared default: ``params.NAME.default``).
    """
    issues: list[GraphIssue] = list(graph.input_errors) + declaration_issues(graph)
    planned: dict[str, PlannedNode] = {}
    dag = _Dag(graph.nodes)
    param_values = params if params is not None else {
        name: d.default for name, d in graph.params.items() if d.default is not None
    }
    node_names = Suggestions(graph.nodes)
    param_names = Suggestions(graph.params)
    models = _ModelNames(registry)
    specs: dict[str, NodeSpec] = {}
    known, broken = registry.nodes, graph.broken_nodes
    for node_id, entry in graph.nodes.items():
        if "." in node_id or not node_id:
            issues.append(GraphIssue(f"nodes.{node_id}", "node ids must be non-empty and contain no '.'", node_id))
        if node_id in broken:
            continue  # its malformed entry is already reported
        spec = known.get(entry.type)
        if spec is not None:
            specs[node_id] = spec
            continue
        try:
            specs[node_id] = registry.node_type(entry.type)
        except KeyError as error:
            issues.append(GraphIssue(f"nodes.{node_id}.type", error.args[0], node_id))
    # The type a flow node (flow.if) passes on comes from its branches.
    typed, flow_issues = same_type_ports(graph, specs, registry)
    issues.extend(flow_issues)
    ranges, range_issues = reconcile_ranges(graph, _param_feeds(graph, specs))
    issues.extend(range_issues)
    out_of_range: dict[str, str] = {}
    in_range: set[str] = set()
    output_checks: dict[str, tuple[tuple[str, Callable[[Any], str | None]], ...]] = {}
    wirings: dict[tuple[str, str], _Wiring] = {}
    ports = registry.ports
    graph_nodes = graph.nodes
    for node_id, refs in graph.inputs.items():
        spec = specs.get(node_id)
        if spec is None:
            continue
        literals: dict[str, Any] = {}
        links: list[Edge] = []
        matched = 0
        for name, ref in refs.items():
            item = spec.inputs.get(name)
            if item is None:
                issues.append(GraphIssue(_at(node_id, name), f"{spec.id} has no input {_short(name)}"
                                                             f"{_closest(name, spec.inputs)} "
                                                             f"(inputs: {_describe_inputs(spec)})", node_id))
                continue
            matched += 1
            if isinstance(ref, Link):
                source_spec = specs.get(ref.node)
                if ref.node not in graph_nodes:
                    issues.append(GraphIssue(_at(node_id, name), f"links to node {_short(ref.node)}, which is not in "
                                                                 f"the graph{node_names.hint(ref.node)}", node_id))
                    continue
                if source_spec is None:
                    continue  # its unknown type is already reported
                output = source_spec.outputs.get(ref.output)
                if output is None:
                    issues.append(GraphIssue(_at(node_id, name), f"node {ref.node!r} ({source_spec.id}) has no output "
                                                   f"{_short(ref.output)}{_closest(ref.output, source_spec.outputs)} "
                                                   f"(outputs: {_describe_outputs(source_spec)})", node_id))
                    continue
                port = typed.get((ref.node, ref.output), output.port) if typed else output.port
                wiring = wirings.get((port, item.port))
                if wiring is None:
                    wiring = wirings[(port, item.port)] = _Wiring.between(ports, port, item.port)
                if not wiring.compatible:
                    issues.append(GraphIssue(_at(node_id, name), f"type mismatch: {ref.node}.{ref.output} is {port}, "
                                                   f"but input {name!r} of {spec.id} takes {item.port}", node_id))
                    continue
                dag.add_edge(ref.node, node_id)
                links.append(Edge(name, ref.node, ref.output, wiring.convert, wiring.check))
                continue
            if isinstance(ref, GraphInputRef):
                issues.append(GraphIssue(_at(node_id, name), f"uses graph input {_short(ref.name)}, which only an "
                                                             "outer graph sets: use this graph as a node type "
                                                             "(a subgraph)", node_id))
                continue
            if isinstance(ref, ParamRef):
                declaration = graph.params.get(ref.name)
                if declaration is None:
                    issues.append(GraphIssue(_at(node_id, name), f"uses graph parameter {_short(ref.name)}, which is "
                                                                 f"not declared in 'params'"
                                                                 f"{param_names.hint(ref.name)}", node_id))
                    continue
                if ref.name in graph.broken_params:
                    continue  # its malformed declaration is already reported
                port = PARAM_PORTS[declaration.type]
                if not ports.is_compatible(port, item.port):
                    issues.append(GraphIssue(_at(node_id, name), f"parameter {ref.name!r} is {declaration.type}, "
                                                                 f"but input {name!r} of {spec.id} takes {item.port}",
                                             node_id))
                    continue
                if ref.name not in param_values:
                    continue  # required parameter with no value yet: checked when run
                value = param_values[ref.name]
                if ref.name in ranges and ref.name not in in_range:
                    problem = ranges[ref.name].problem(value)
                    if problem:
                        out_of_range[ref.name] = problem  # reported once, below, for every site it feeds
                    else:
                        in_range.add(ref.name)
                if ref.name in out_of_range:
                    continue
                origin = f"parameter {ref.name!r} = {_short(value)}"
                source_port = port
            else:
                value, origin = ref.value, f"value {_short(ref.value)}"
                if not ports.get(item.port).literal:
                    issues.append(GraphIssue(_at(node_id, name), f"input {name!r} takes {item.port}, which cannot be "
                                                                 "written as a literal; link it to another node's "
                                                                 "output", node_id))
                    continue
                source_port = ports.name_for_annotation(type(value)) or item.port
            try:
                convert = ports.converter(source_port, item.port)
                if convert is not None:
                    value = convert(value)
                literals[name] = item.validate_literal(value)
            except Exception as error:  # noqa: BLE001 - a plugin's conversion or validator may raise anything
                issues.append(GraphIssue(_at(node_id, name), f"{origin} is invalid for {spec.id}.{name}: "
                                               f"{_reason(error)}", node_id))
                continue
            problem = models.problem(spec, name, item.port, literals[name])
            if problem:
                issues.append(GraphIssue(_at(node_id, name), f"{origin}: {problem}", node_id))
        checks = output_checks.get(spec.id)
        if checks is None:
            checks = output_checks[spec.id] = tuple(
                (name, check) for name, output in spec.outputs.items()
                if (check := ports.checker(output.port)) is not None)
        if matched < len(spec.inputs):  # some inputs are not set: required ones are missing, others take defaults
            for name, item in spec.inputs.items():
                if name in refs:
                    continue
                if item.required:
                    issues.append(GraphIssue(f"nodes.{node_id}.inputs", f"missing required input {name!r} "
                                                                        f"({item.port}) of {spec.id}", node_id))
                else:
                    literals[name] = item.default
        planned[node_id] = PlannedNode(node_id, spec, literals, links, output_checks=checks)
    issues.extend(_range_value_issues(graph, params is None, param_values, out_of_range, value_issues))
    issues.extend(_cycle_issues(dag))
    issues.extend(_attribute_issues(planned, registry, graph.inputs))
    for name, target in graph.document.outputs.items():
        node, _, output = target.rpartition(".")
        if node not in graph.nodes:
            issues.append(GraphIssue(f"outputs.{name}", f"refers to node {_short(node)}, which is not in the graph"
                                                        f"{node_names.hint(node)}"))
        elif node in specs and output not in specs[node].outputs:
            issues.append(GraphIssue(f"outputs.{name}", f"node {node!r} has no output {_short(output)} "
                                                        f"(outputs: {_describe_outputs(specs[node])})", node))
    return issues, planned, dag


@dataclass(frozen=True, slots=True)
class _Wiring:
    """What a link from one port type to another needs: the same for every such link, so found once per plan."""

    compatible: bool
    convert: Callable[[Any], Any] | None
    check: Callable[[Any], str | None] | None

    @classmethod
    def between(cls, ports: Any, source: str, target: str) -> _Wiring:
        if not ports.is_compatible(source, target):
            return cls(False, None, None)
        return cls(True, ports.converter(source, target), ports.checker(target))


def _param_feeds(graph: Graph, specs: dict[str, NodeSpec]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """For each parameter, the bounded inputs it feeds: ``(where, constraints)``.

    One site per parameter and node type input (the first): the others have
    the same bounds, and a parameter feeding thousands of nodes stays cheap.
    """
    feeds: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if not graph.params:
        return feeds  # no parameter to give a range (references to undeclared ones are reported elsewhere)
    seen: set[tuple[str, str, str]] = set()
    for node_id, refs in graph.inputs.items():
        spec = specs.get(node_id)
        for name, ref in refs.items() if spec is not None else ():
            if not isinstance(ref, ParamRef) or name not in spec.inputs or (ref.name, spec.id, name) in seen:
                continue
            seen.add((ref.name, spec.id, name))
            constraints = spec.inputs[name].constraints()
            if any(key in constraints for key in ("ge", "gt", "le", "lt")):
                feeds.setdefault(ref.name, []).append((f"{node_id}.{name} ({spec.id})", constraints))
    return feeds


def _range_value_issues(graph: Graph, defaults: bool, values: dict[str, Any], out_of_range: dict[str, str],
                        value_issues: list[GraphIssue] | None) -> list[GraphIssue]:
    """One issue per parameter whose value is outside its range (see :func:`_analyse_flat`)."""
    issues = []
    for name, problem in out_of_range.items():
        declaration = graph.params[name]
        if defaults:
            try:
                check_value(declaration, values[name])
            except ValueError:
                continue  # outside its own declared range: already reported with the declaration
            issues.append(GraphIssue(f"params.{name}.default", f"default {_short(values[name])} is invalid: {problem}"))
        else:
            issue = GraphIssue(f"params.{name}", f"parameter {name!r} ({declaration.type}): {problem}")
            (value_issues if value_issues is not None else issues).append(issue)
    return issues


def _reason(error: BaseException) -> str:
    """An exception as the end of a sentence: its message, or its type when it has none."""
    text = str(error)
    return text if isinstance(error, ValueError) and text else f"{type(error).__name__}: {text}" if text \
        else type(error).__name__


class _ModelNames:
    """Checks a node's ``model`` input names a model before anything loads.

    A node that loads models takes a run context and names its model in an
    input called ``model``; the model manager resolves it at run time (a
    registered name, a local folder, or a hub id). The same rule applied at
    validation turns a typo into an error with "did you mean" over the
    registered names, instead of a failure after other models have loaded.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._suggestions: Suggestions | None = None
        self._answers: dict[str, str | None] = {}

    def problem(self, spec: NodeSpec, name: str, port: str, value: Any) -> str | None:
        if name != "model" or port != "Text" or spec.context_param is None or not isinstance(value, str):
            return None
        if value not in self._answers:
            self._answers[value] = self._check(value)
        return self._answers[value]

    def _check(self, value: str) -> str | None:
        from ..errors import ModelNotFoundError
        from ..store.models import ModelManager

        try:
            ModelManager(sources=self._registry.models).resolve(value)
        except ModelNotFoundError as error:
            if self._suggestions is None:
                self._suggestions = Suggestions(self._registry.models)
            return f"{_cut(str(error), 400)}{self._suggestions.hint(value)}"
        except (OSError, ValueError, RuntimeError) as error:
            # A malformed path: a NUL byte, a name too long, '~user' for a user that does not exist.
            return f"model {_short(value)} cannot be used: {_cut(str(error), 200)}"
        return None


def _cycle_issues(dag: _Dag) -> list[GraphIssue]:
    if not dag.has_cycle():
        return []
    import networkx as nx  # only for a graph with a cycle: the components name its nodes

    cyclic = nx.DiGraph()
    cyclic.add_nodes_from(dag.succ)
    cyclic.add_edges_from((source, target) for source, targets in dag.succ.items() for target in targets)
    issues = []
    for component in nx.strongly_connected_components(cyclic):
        if len(component) > 1 or any(cyclic.has_edge(n, n) for n in component):
            names = sorted(component)
            issues.append(GraphIssue("nodes", f"cycle between nodes {', '.join(repr(n) for n in names)}", names[0]))
    return issues


def _attribute_issues(planned: dict[str, PlannedNode], registry: Registry,
                      graph_inputs: dict[str, dict[str, Any]]) -> list[GraphIssue]:
    """Compare what producers say about their outputs with what consumers expect.

    Each callback gets a :class:`ValidationContext` for its node; the problems
    and warnings it reports there join the issues, as errors or warnings.
    """
    issues: list[GraphIssue] = []
    described: dict[str, dict[str, dict[str, Any]]] = {}
    contexts: dict[str, ValidationContext] = {}

    def context_of(node: PlannedNode) -> ValidationContext:
        if node.id not in contexts:
            contexts[node.id] = ValidationContext(registry, node.id, frozenset(graph_inputs.get(node.id, ())))
        return contexts[node.id]

    for node in planned.values():
        if node.spec.describe_outputs is not None:
            try:
                described[node.id] = node.spec.describe_outputs(node.literals, context_of(node)) or {}
            except LimitExceededError as error:
                # A node refuses, from its literal inputs, an output over the resource limits.
                issues.append(GraphIssue(f"nodes.{node.id}", str(error), node.id))
            except Exception as error:  # noqa: BLE001 - a description is best effort
                issues.append(GraphIssue(f"nodes.{node.id}", f"could not describe outputs: {_reason(error)}", node.id))
    for node in planned.values():
        if node.spec.expect_inputs is None:
            continue
        try:
            expected = node.spec.expect_inputs(node.literals, context_of(node)) or {}
        except LimitExceededError as error:
            issues.append(GraphIssue(f"nodes.{node.id}", str(error), node.id))
            continue
        except Exception as error:  # noqa: BLE001
            issues.append(GraphIssue(f"nodes.{node.id}", f"could not describe expected inputs: {_reason(error)}",
                                     node.id))
            continue
        for edge in node.links:
            name, source, output = edge.key
            wanted = expected.get(name)
            have = described.get(source, {}).get(output)
            if not wanted or not have:
                continue
            clashes = [f"{key}={have[key]!r} (needs {value!r})" for key, value in wanted.items()
                       if key in have and have[key] != value]
            if clashes:
                issues.append(GraphIssue(
                    f"nodes.{node.id}.inputs.{name}",
                    f"{source}.{output} provides {', '.join(clashes)} for {node.spec.id}.{name}", node.id))
    for node_id, context in contexts.items():
        for severity, name, message in context.notes:
            path = f"nodes.{node_id}.inputs.{name}" if name else f"nodes.{node_id}"
            issues.append(GraphIssue(path, message, node_id, severity))
    return issues


def _split(issues: list[GraphIssue]) -> tuple[list[GraphIssue], list[GraphIssue]]:
    """(errors, warnings)."""
    errors = [issue for issue in issues if issue.severity != "warning"]
    return errors, [issue for issue in issues if issue.severity == "warning"]


def validate_graph(graph: Graph, registry: Registry, *, warnings: bool = False) -> list[GraphIssue]:
    """Every problem of ``graph`` against the installed node types (empty when valid).

    With ``warnings`` the list also holds the warnings (``severity ==
    "warning"``, after the errors): things worth saying that do not stop a
    run, such as inputs the chosen backend ignores.
    """
    errors, found = _split(_analyse(graph, registry, None)[0])
    return errors + found if warnings else errors


def _targets(graph: Graph, planned: dict[str, PlannedNode], dag: _Dag) -> list[str]:
    targets = {target.rpartition(".")[0] for target in graph.document.outputs.values()}
    targets.update(node_id for node_id, node in planned.items() if node.spec.output_node)
    if not targets:
        # A graph with neither outputs nor side effects: run its sinks rather than nothing.
        targets = {n for n, consumers in dag.succ.items() if not consumers}
    return sorted(targets)


def _needed(dag: _Dag, targets: list[str]) -> set[str]:
    needed, stack, pred = set(), list(targets), dag.pred
    while stack:
        current = stack.pop()
        if current in needed:
            continue
        needed.add(current)
        stack.extend(pred[current])
    return needed


def plan_run(graph: Graph, registry: Registry, params: dict[str, Any] | None = None,
             *, params_from_text: bool = False, seed: int | None = None,
             run_context: dict[str, Any] | None = None) -> Plan:
    """Validate ``graph`` with ``params`` and return the plan; raises on any problem.

    ``seed`` (the run seed) defaults to the graph's ``seed`` parameter, else 0;
    given for a graph that has a ``seed`` parameter not set in ``params``, it
    sets that parameter too. ``run_context``
    holds the run settings (device, dtype, output folder) that nodes reading
    them are keyed by; see ``NodeSpec.context_keys``.
    """
    with collector_paused():
        return _plan_run(graph, registry, params, params_from_text=params_from_text, seed=seed,
                         run_context=run_context)


def _plan_run(graph: Graph, registry: Registry, params: dict[str, Any] | None = None,
              *, params_from_text: bool = False, seed: int | None = None,
              run_context: dict[str, Any] | None = None) -> Plan:
    params = dict(params or {})
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise ParameterError(f"the run seed must be an integer from 0 to 2**64 - 1, got {_short(seed)}")
    if seed is not None and "seed" in graph.params and "seed" not in params:
        # One seed, not two: a run seed given for a graph with a 'seed' parameter sets it.
        params["seed"] = seed
    resolved, param_issues = param_problems(graph, params, from_text=params_from_text)
    if seed is None:
        seed = int(resolved["seed"]) if isinstance(resolved.get("seed"), int) else 0
    issues, planned, dag, flat, notes = _analyse(graph, registry, resolved, param_issues)
    issues, warnings = _split(issues)
    if param_issues:
        # Bad values do not hide the graph's other problems: report them all at
        # once; a ParameterError when the values are all that is wrong.
        if not issues:
            raise ParameterError("; ".join(issue.message for issue in param_issues))
        issues = param_issues + issues
    # Literal paths the run's path policy refuses (see paths.py).
    issues.extend(path_issues(planned, (run_context or {}).get("path_policy")))
    if issues:
        raise GraphValidationError(issues, graph.source)
    targets = _targets(flat, planned, dag)
    needed = _needed(dag, targets)
    order = [n for n in dag.order() if n in needed]
    nodes = {node_id: planned[node_id] for node_id in order}
    sign = _Signer(nodes, _ContextValues(graph, resolved, seed, run_context or {})).sign
    for node_id in order:
        node = nodes[node_id]
        node.signature = sign(node)
    outputs = {name: tuple(t.rpartition(".")[::2]) for name, t in flat.document.outputs.items()}
    return Plan(graph, resolved, nodes, order, targets, outputs, seed, warnings,
                flat=flat if flat is not graph else None, migrations=notes)


class _ContextValues:
    """Run settings as signature parts, each computed at most once per plan."""

    def __init__(self, graph: Graph, params: dict[str, Any], seed: int, run: dict[str, Any]) -> None:
        self._graph, self._params, self._seed, self._run = graph, params, seed, run
        self._cache: dict[str, str] = {}

    def part(self, key: str) -> str:
        if key not in self._cache:
            if key == "seed":
                value = str(self._seed)
            elif key == "params":
                value = _canonical(self._params)
            elif key == "graph":
                value = hashlib.blake2b(_canonical(self._graph.to_dict()).encode(), digest_size=16).hexdigest()
            else:
                value = str(self._run.get(key, ""))
            self._cache[key] = f"{key}={value}"
        return self._cache[key]


def _edge_key(edge: Edge) -> tuple[str, str, str]:
    return (edge.input, edge.source, edge.output)


def signature_of(node: PlannedNode, nodes: dict[str, PlannedNode], context: _ContextValues | None = None) -> str:
    """The cache key of ``node``: type, version, literals, parents' signatures, fingerprint,
    and the run settings it reads through its context.

    Parents must already be signed: callers walk the plan in topological order,
    so every signature is computed once, from its parents' (linear time).
    """
    return _Signer(nodes, context).sign(node)


class _Signer:
    """Signs a plan's nodes (see :func:`signature_of`), working out what depends only on a node's type once."""

    def __init__(self, nodes: dict[str, PlannedNode], context: _ContextValues | None) -> None:
        self._nodes, self._context = nodes, context
        #: Node type -> (its id and version, the run settings it reads), as signature text.
        self._heads: dict[str, tuple[str, str | None]] = {}

    def _head(self, spec: NodeSpec) -> tuple[str, str | None]:
        reads = None
        if self._context is not None and spec.context_param and spec.context_keys:
            reads = "\x1f".join(self._context.part(key) for key in spec.context_keys)
        return f"{spec.id}\x1f{spec.version}", reads

    def sign(self, node: PlannedNode) -> str:
        spec = node.spec
        head = self._heads.get(spec.id)
        if head is None:
            head = self._heads[spec.id] = self._head(spec)
        prefix, reads = head
        parts = [prefix, _canonical(node.literals)]
        links, nodes = node.links, self._nodes
        for edge in sorted(links, key=_edge_key) if len(links) > 1 else links:
            parts.append(f"{edge.input}<{nodes[edge.source].signature}.{edge.output}")
        if reads is not None:
            parts.append(reads)
        cache = spec.cache
        if cache.always_rerun:
            parts.append(uuid.uuid4().hex)
        elif cache.fingerprint is not None:
            try:
                parts.append(cache.fingerprint(node.literals))
            except Exception as error:  # noqa: BLE001 - let the node itself report what it cannot read
                parts.append(f"unreadable:{uuid.uuid4().hex}:{error}")
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=20).hexdigest()
