"""Flow support in planning: the types carried through nodes with ``same_type`` lazy inputs.

A ``flow.if`` between two images outputs an image: its output is declared
``Any``, and here each such node's output type is found from what is linked to
its ``same_type`` inputs (following chains of flow nodes), so a consumer is
checked against the real type and two branches of different types are an error
before anything runs.
"""

from __future__ import annotations

from typing import Any

from ..errors import GraphIssue
from ..graph.document import Graph, Link, ParamRef, Value
from ..graph.params import PARAM_PORTS
from ..plugin.nodes import NodeSpec
from ..plugin.ports import ANY


def same_type_ports(graph: Graph, specs: dict[str, NodeSpec], registry: Any
                    ) -> tuple[dict[tuple[str, str], str], list[GraphIssue]]:
    """``(node, output) -> port`` for the ``Any`` outputs of nodes with ``same_type`` inputs, and the mismatches."""
    generic = {node_id: lazy.same_type for node_id, spec in specs.items()
               if (lazy := spec.lazy) is not None and lazy.same_type}
    if not generic:
        return {}, []
    found: dict[str, str] = {}
    issues: list[GraphIssue] = []

    def port_of(node_id: str, output: str, seen: tuple[str, ...]) -> str:
        spec = specs.get(node_id)
        item = spec.outputs.get(output) if spec is not None else None
        if item is None:
            return ANY  # reported elsewhere
        if item.port == ANY and node_id in generic and node_id not in seen:
            return resolve(node_id, seen)
        return item.port

    def resolve(node_id: str, seen: tuple[str, ...] = ()) -> str:
        if node_id in found:
            return found[node_id]
        common, first = ANY, ""
        for name in generic[node_id]:
            ref = graph.inputs.get(node_id, {}).get(name)
            if isinstance(ref, Link):
                port, where = port_of(ref.node, ref.output, (*seen, node_id)), f"{ref.node}.{ref.output}"
            elif isinstance(ref, ParamRef) and ref.name in graph.params:
                port, where = PARAM_PORTS[graph.params[ref.name].type], f"parameter {ref.name!r}"
            elif isinstance(ref, Value) and ref.value is not None:
                port, where = registry.ports.name_for_annotation(type(ref.value)) or ANY, f"value {ref.value!r:.40}"
            else:
                continue
            if port == ANY:
                continue
            if common == ANY:
                common, first = port, f"{name!r} ({where}) is {port}"
            elif registry.ports.is_compatible(common, port) and not registry.ports.is_compatible(port, common):
                common = port  # the wider type (Float over Int) is what the output carries
            elif not registry.ports.is_compatible(port, common):
                issues.append(GraphIssue(f"nodes.{node_id}.inputs.{name}",
                                         f"{specs[node_id].id} takes one type on {', '.join(generic[node_id])}: "
                                         f"{first}, but {name!r} ({where}) is {port}", node_id))
        found[node_id] = common
        return common

    ports: dict[tuple[str, str], str] = {}
    for node_id in generic:
        port = resolve(node_id)
        for output, item in specs[node_id].outputs.items():
            if item.port == ANY:
                ports[(node_id, output)] = port
    return ports, issues
