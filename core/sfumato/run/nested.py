"""Graphs run from inside a node: what ``flow.map`` and ``flow.loop`` are made of.

A node calls :func:`run_nested` while it runs; the graph runs on the same
engine as the node's own run — its memory and disk caches, its loaded models,
its output folder, seed and cancellation — so an inner node already computed
(by an earlier iteration, item or run) is served from the cache, and several
parameter sets go to one schedule, where nodes with a ``batch`` function
receive their calls in batches. The nested runs are not shown to the engine's
observers (the calling node reports its own progress); plugins' event hooks
see them as runs.

Which graphs: a plugin's graph type (``zoo.card``) or a shipped graph
(``graph:make-images`` or ``make-images``) — never a path, so a graph file
(or a server request) cannot make a node read an arbitrary file.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from ..errors import GraphIssue, GraphValidationError, SfumatoError
from ..graph.document import Graph
from ..graph.shipped import shipped_graph_path
from ..graph.subgraph import GRAPH_PREFIX
from ..plugin.events import ACTIVE_RUN
from ..registry import Registry, default_registry
from .report import RunStatus


def find_graph(name: str, registry: Registry | None = None) -> Graph:
    """A graph type of ``registry`` (default: the installed plugins) or a shipped graph, by name.

    Raises :class:`GraphValidationError` naming what exists when there is none.
    """
    registry = registry or _active_registry() or default_registry()
    graph_type = registry.graph_types.get(name)
    if graph_type is not None:
        return graph_type.graph  # type: ignore[return-value]
    path = shipped_graph_path(name.removeprefix(GRAPH_PREFIX))
    if path is None:
        known = sorted(registry.graph_types)
        raise GraphValidationError([GraphIssue("$", f"no graph type or shipped graph {name!r}; graph types: "
                                                    f"{', '.join(known) or 'none'}; shipped graphs are named "
                                                    "graph:NAME (see 'sfumato graphs')")], name)
    return Graph.load(path)


def graph_fingerprint(name: str) -> str:
    """A hash of what graph ``name`` holds: a node running it is re-run when the graph changes."""
    document = json.dumps(find_graph(name).to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(document.encode(), digest_size=16).hexdigest()


def run_nested(graph: str | Graph, param_sets: list[dict[str, Any]], *, batch_size: int = 8
               ) -> list[dict[str, Any]]:
    """Run ``graph`` once per parameter set from inside a running node; each run's outputs, in order.

    Raises :class:`SfumatoError` naming the first parameter set whose run
    failed (its index and values, and the error), and ``RuntimeError`` when called outside a node.
    """
    state = ACTIVE_RUN.get()
    if state is None:
        raise RuntimeError("run_nested runs a graph from inside a node, while the node runs")
    name = graph if isinstance(graph, str) else graph.name
    if isinstance(graph, str):
        graph = find_graph(graph, state.engine.registry)
    # The same caches, models and callables; no observers (the calling node reports progress).
    engine = copy.copy(state.engine)
    engine.observers = []
    settings = state.settings
    outcomes = engine.run_many(graph, param_sets, batch_size=batch_size,
                               output_dir=settings.output_dir, cancel_event=settings.cancel_event)
    for index, outcome in enumerate(outcomes):
        if outcome.status != RunStatus.OK:
            raise SfumatoError(f"graph {name!r} failed for parameter set {index} "
                               f"{_short(param_sets[index])}: {outcome.error}")
    return [outcome.outputs for outcome in outcomes]


def _active_registry() -> Registry | None:
    state = ACTIVE_RUN.get()
    return state.engine.registry if state is not None else None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
