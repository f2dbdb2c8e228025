"""Validation and planning: from a graph file to an ordered, signed plan.

:func:`validate_graph` collects every problem at once. :func:`plan_run`
resolves parameters, keeps only the nodes the outputs need, orders them
topologically and computes each node's cache signature from its type, version,
literal inputs and its parents' signatures, once per node, in one linear pass.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from .collector import collector_paused
from .errors import GraphIssue, GraphValidationError
from .graph import Graph, Link, ParamRef
from .nodes import NodeSpec
from .params import PARAM_PORTS, declaration_issues, resolve_params
from .registry import Registry


@dataclass(slots=True)
class PlannedNode:
    """One node of a plan with its resolved literal inputs and incoming links."""

    id: str
    spec: NodeSpec
    literals: dict[str, Any]
    #: (input name, source node, source output, converter or None)
    links: list[tuple[str, str, str, Callable[[Any], Any] | None]]
    signature: str = ""


@dataclass
class Plan:
    """What a run will do: needed nodes in order, with signatures."""

    graph: Graph
    params: dict[str, Any]
    nodes: dict[str, PlannedNode]
    order: list[str]
    targets: list[str]
    skipped: list[str]
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    dag: Any = None
    seed: int = 0


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _closest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe_inputs(spec: NodeSpec) -> str:
    return ", ".join(f"{i.name} ({i.port})" for i in spec.inputs.values()) or "none"


def _describe_outputs(spec: NodeSpec) -> str:
    return ", ".join(f"{o.name} ({o.port})" for o in spec.outputs.values()) or "none"


def _analyse(graph: Graph, registry: Registry, params: dict[str, Any] | None
             ) -> tuple[list[GraphIssue], dict[str, PlannedNode], Any]:
    """Check a graph against the registry; also resolve literals and links."""
    issues: list[GraphIssue] = list(graph.input_errors) + declaration_issues(graph)
    planned: dict[str, PlannedNode] = {}
    dag = nx.DiGraph()
    dag.add_nodes_from(graph.nodes)
    param_values = params if params is not None else {
        name: d.default for name, d in graph.params.items() if d.default is not None
    }
    specs: dict[str, NodeSpec] = {}
    for node_id, entry in graph.nodes.items():
        if "." in node_id or not node_id:
            issues.append(GraphIssue(f"nodes.{node_id}", "node ids must be non-empty and contain no '.'", node_id))
        try:
            specs[node_id] = registry.node_type(entry.type)
        except KeyError as error:
            issues.append(GraphIssue(f"nodes.{node_id}.type", error.args[0], node_id))
    for node_id, refs in graph.inputs.items():
        spec = specs.get(node_id)
        if spec is None:
            continue
        literals: dict[str, Any] = {}
        links: list[tuple[str, str, str, Callable[[Any], Any] | None]] = []
        for name, ref in refs.items():
            path = f"nodes.{node_id}.inputs.{name}"
            item = spec.inputs.get(name)
            if item is None:
                issues.append(GraphIssue(path, f"{spec.id} has no input {name!r}{_closest(name, spec.inputs)} "
                                               f"(inputs: {_describe_inputs(spec)})", node_id))
                continue
            if isinstance(ref, Link):
                source_spec = specs.get(ref.node)
                if ref.node not in graph.nodes:
                    issues.append(GraphIssue(path, f"links to node {ref.node!r}, which is not in the graph"
                                                   f"{_closest(ref.node, graph.nodes)}", node_id))
                    continue
                if source_spec is None:
                    continue  # its unknown type is already reported
                output = source_spec.outputs.get(ref.output)
                if output is None:
                    issues.append(GraphIssue(path, f"node {ref.node!r} ({source_spec.id}) has no output {ref.output!r}"
                                                   f"{_closest(ref.output, source_spec.outputs)} "
                                                   f"(outputs: {_describe_outputs(source_spec)})", node_id))
                    continue
                if not registry.ports.is_compatible(output.port, item.port):
                    issues.append(GraphIssue(path, f"type mismatch: {ref.node}.{ref.output} is {output.port}, "
                                                   f"but input {name!r} of {spec.id} takes {item.port}", node_id))
                    continue
                dag.add_edge(ref.node, node_id)
                links.append((name, ref.node, ref.output, registry.ports.converter(output.port, item.port)))
                continue
            if isinstance(ref, ParamRef):
                declaration = graph.params.get(ref.name)
                if declaration is None:
                    issues.append(GraphIssue(path, f"uses graph parameter {ref.name!r}, which is not declared in "
                                                   f"'params'{_closest(ref.name, graph.params)}", node_id))
                    continue
                port = PARAM_PORTS[declaration.type]
                if not registry.ports.is_compatible(port, item.port):
                    issues.append(GraphIssue(path, f"parameter {ref.name!r} is {declaration.type}, but input "
                                                   f"{name!r} of {spec.id} takes {item.port}", node_id))
                    continue
                if ref.name not in param_values:
                    continue  # required parameter with no value yet: checked when run
                value, origin = param_values[ref.name], f"parameter {ref.name!r} = {param_values[ref.name]!r}"
                source_port = port
            else:
                value, origin = ref.value, f"value {ref.value!r}"
                if not registry.ports.get(item.port).literal:
                    issues.append(GraphIssue(path, f"input {name!r} takes {item.port}, which cannot be written as a "
                                                   "literal; link it to another node's output", node_id))
                    continue
                source_port = registry.ports.name_for_annotation(type(value)) or item.port
            convert = registry.ports.converter(source_port, item.port)
            if convert is not None:
                value = convert(value)
            try:
                literals[name] = item.validate_literal(value)
            except ValueError as error:
                issues.append(GraphIssue(path, f"{origin} is invalid for {spec.id}.{name}: {error}", node_id))
        for name, item in spec.inputs.items():
            if item.required and name not in refs:
                issues.append(GraphIssue(f"nodes.{node_id}.inputs", f"missing required input {name!r} "
                                                                    f"({item.port}) of {spec.id}", node_id))
            elif name not in refs and not item.required:
                literals[name] = item.default
        planned[node_id] = PlannedNode(node_id, spec, literals, links)
    issues.extend(_cycle_issues(dag))
    issues.extend(_attribute_issues(planned))
    for name, target in graph.document.outputs.items():
        node, _, output = target.rpartition(".")
        if node not in graph.nodes:
            issues.append(GraphIssue(f"outputs.{name}", f"refers to node {node!r}, which is not in the graph"))
        elif node in specs and output not in specs[node].outputs:
            issues.append(GraphIssue(f"outputs.{name}", f"node {node!r} has no output {output!r} "
                                                        f"(outputs: {_describe_outputs(specs[node])})", node))
    return issues, planned, dag


def _cycle_issues(dag: Any) -> list[GraphIssue]:
    issues = []
    for component in nx.strongly_connected_components(dag):
        if len(component) > 1 or any(dag.has_edge(n, n) for n in component):
            names = sorted(component)
            issues.append(GraphIssue("nodes", f"cycle between nodes {', '.join(repr(n) for n in names)}", names[0]))
    return issues


def _attribute_issues(planned: dict[str, PlannedNode]) -> list[GraphIssue]:
    """Compare what producers say about their outputs with what consumers expect."""
    issues: list[GraphIssue] = []
    described: dict[str, dict[str, dict[str, Any]]] = {}
    for node in planned.values():
        if node.spec.describe_outputs is not None:
            try:
                described[node.id] = node.spec.describe_outputs(node.literals) or {}
            except Exception as error:  # noqa: BLE001 - a description is best effort
                issues.append(GraphIssue(f"nodes.{node.id}", f"could not describe outputs: {error}", node.id))
    for node in planned.values():
        if node.spec.expect_inputs is None:
            continue
        try:
            expected = node.spec.expect_inputs(node.literals) or {}
        except Exception as error:  # noqa: BLE001
            issues.append(GraphIssue(f"nodes.{node.id}", f"could not describe expected inputs: {error}", node.id))
            continue
        for name, source, output, _ in node.links:
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
    return issues


def validate_graph(graph: Graph, registry: Registry) -> list[GraphIssue]:
    """Every problem of ``graph`` against the installed node types (empty when valid)."""
    return _analyse(graph, registry, None)[0]


def _targets(graph: Graph, planned: dict[str, PlannedNode], dag: Any) -> list[str]:
    targets = {target.rpartition(".")[0] for target in graph.document.outputs.values()}
    targets.update(node_id for node_id, node in planned.items() if node.spec.output_node)
    if not targets:
        # A graph with neither outputs nor side effects: run its sinks rather than nothing.
        targets = {n for n in dag.nodes if dag.out_degree(n) == 0}
    return sorted(targets)


def _needed(dag: Any, targets: list[str]) -> set[str]:
    needed, stack = set(), list(targets)
    while stack:
        current = stack.pop()
        if current in needed:
            continue
        needed.add(current)
        stack.extend(dag.predecessors(current))
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
    if seed is not None and "seed" in graph.params and "seed" not in params:
        # One seed, not two: a run seed given for a graph with a 'seed' parameter sets it.
        params["seed"] = seed
    resolved = resolve_params(graph, params, from_text=params_from_text)
    if seed is None:
        seed = int(resolved["seed"]) if isinstance(resolved.get("seed"), int) else 0
    issues, planned, dag = _analyse(graph, registry, resolved)
    # Path policy (sfumato/paths.py; one delimited edit): literal paths the run may not use.
    from .paths import path_issues

    issues.extend(path_issues(planned, (run_context or {}).get("path_policy")))
    if issues:
        raise GraphValidationError(issues, graph.source)
    targets = _targets(graph, planned, dag)
    needed = _needed(dag, targets)
    order = [n for n in nx.topological_sort(dag) if n in needed]
    nodes = {node_id: planned[node_id] for node_id in order}
    context = _ContextValues(graph, resolved, seed, run_context or {})
    for node_id in order:
        node = nodes[node_id]
        node.signature = signature_of(node, nodes, context)
    outputs = {name: tuple(t.rpartition(".")[::2]) for name, t in graph.document.outputs.items()}
    skipped = [n for n in graph.nodes if n not in needed]
    return Plan(graph, resolved, nodes, order, targets, skipped, outputs, dag, seed)  # type: ignore[arg-type]


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


def signature_of(node: PlannedNode, nodes: dict[str, PlannedNode], context: _ContextValues | None = None) -> str:
    """The cache key of ``node``: type, version, literals, parents' signatures, fingerprint,
    and the run settings it reads through its context.

    Parents must already be signed: callers walk the plan in topological order,
    so every signature is computed once, from its parents' (linear time).
    """
    spec = node.spec
    parts = [spec.id, str(spec.version), _canonical(node.literals)]
    for name, source, output, _ in sorted(node.links):
        parts.append(f"{name}<{nodes[source].signature}.{output}")
    if context is not None and spec.context_param:
        parts.extend(context.part(key) for key in spec.context_keys)
    if spec.volatile:
        parts.append(uuid.uuid4().hex)
    elif spec.fingerprint is not None:
        try:
            parts.append(spec.fingerprint(node.literals))
        except Exception as error:  # noqa: BLE001 - let the node itself report what it cannot read
            parts.append(f"unreadable:{uuid.uuid4().hex}:{error}")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=20).hexdigest()
