"""The flow nodes: branches (``flow.if``, ``flow.switch``), conditions and counters, and ``flow.loop``."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import sfumato
from sfumato import Field, node

#: How many cases ``flow.switch`` takes.
CASES = 8
_CASE_NAMES = tuple(f"case{index}" for index in range(CASES))


def _branch_of(values: dict[str, Any]) -> list[str]:
    return ["if_true" if values["condition"] else "if_false"]


@sfumato.lazy_inputs("if_true", "if_false", needs=_branch_of, same_type=("if_true", "if_false"))
@node("flow.if", category="flow", output="value")
def if_(condition: bool, if_true: Any = None, if_false: Any = None) -> Any:
    """Pass on ``if_true`` when the condition holds, else ``if_false``; only that branch runs.

    The nodes feeding the other branch are never run (the run report lists
    them as skipped, "untaken branch"). Both branches must have one type,
    checked before the run; the output has that type.

    Args:
        condition: which branch to take.
        if_true: the value when the condition is true.
        if_false: the value when the condition is false.
    """
    return if_true if condition else if_false


def _case_of(values: dict[str, Any]) -> Iterable[str]:
    index = values["index"]
    if not 0 <= index < CASES:
        raise ValueError(f"index {index} is outside 0..{CASES - 1}")
    return [f"case{index}"]


@sfumato.lazy_inputs(*_CASE_NAMES, needs=_case_of, same_type=_CASE_NAMES)
@node("flow.switch", category="flow", output="value")
def switch(index: int, case0: Any = None, case1: Any = None, case2: Any = None, case3: Any = None,
           case4: Any = None, case5: Any = None, case6: Any = None, case7: Any = None) -> Any:
    """Pass on the case chosen by ``index`` (0 to 7); only that case's branch runs.

    Args:
        index: which case to pass on.
        case0: the value for index 0 (likewise case1 to case7).
    """
    chosen = (case0, case1, case2, case3, case4, case5, case6, case7)[index]
    if chosen is None:
        raise ValueError(f"case{index} is chosen but has no value: link it or give it a value")
    return chosen


_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
              "==": operator.eq, "!=": operator.ne}


@node("flow.compare", category="flow", output="result")
def compare(a: float, b: float = 0.0, op: Literal[">=", ">", "<=", "<", "==", "!="] = ">=") -> bool:
    """Compare two numbers: ``a op b`` (a condition for ``flow.if``).

    Args:
        a: the left number (a score, a count).
        b: the right number (a threshold).
        op: the comparison.
    """
    return bool(_OPERATORS[op](a, b))


@node("flow.number", category="flow", output="value")
def number(data: dict, key: str) -> float:
    """Read one number out of a record, such as ``all`` from ``zoo.score``'s scores (a condition's input).

    Args:
        data: the record.
        key: the field to read; it must hold a number.
    """
    if key not in data:
        raise ValueError(f"no field {key!r} (fields: {', '.join(sorted(map(str, data))) or 'none'})")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"field {key!r} holds {value!r:.40}, not a number")
    return float(value)


@node("flow.increment", category="flow", output="value")
def increment(value: int, by: int = 1) -> int:
    """``value + by``: the next seed of a retry, the next index of a chain.

    Args:
        value: the number to start from.
        by: what to add.
    """
    return value + by


@node("flow.loop", category="flow", outputs={"state": Any, "done": bool})
def loop(body: str, max_iterations: Annotated[int, Field(ge=1, le=100)], state: Any = None) -> dict[str, Any]:
    """Repeat the graph ``body`` until its ``done`` output is true, at most ``max_iterations`` times.

    The body declares an input (or parameter) ``state`` and outputs ``state``
    (the next iteration's state) and ``done``; the loop's other inputs go to
    the body's inputs of the same names, and its outputs are the body's
    outputs from the iteration that finished (the first one done, else the
    last). The loop is unrolled when the graph is planned: iteration ``k``'s
    nodes are ``LOOP/k/...``, each cached like any node, and the iterations
    after the one that finished never run (the run report lists them as
    skipped branches). The state keeps the type the body declares for it.

    Args:
        body: the graph to repeat: a plugin's graph type, or graph:NAME (a file beside this graph or a
            shipped graph).
        max_iterations: the most times the body runs (required: a loop is always bounded).
        state: the first iteration's state.
    """
    raise RuntimeError("flow.loop is unrolled into its iterations when the graph is planned, never called")


def _graph_fingerprint(literals: dict[str, Any]) -> str:
    # The mapped graph's content joins the cache key: edit the graph, and the map runs again.
    # (A graph type of a registry other than the installed one is fixed while it is loaded.)
    try:
        return sfumato.graph_fingerprint(literals["graph"])
    except (sfumato.GraphValidationError, KeyError, TypeError):
        return ""


def _check_mapped_graph(literals: dict[str, Any], context: sfumato.ValidationContext) -> dict[str, Any]:
    name = literals.get("graph")
    if not isinstance(name, str):
        return {}
    try:
        graph = sfumato.find_graph(name, context.registry)
    except sfumato.GraphValidationError as error:
        context.problem(error.issues[0].message, "graph")
        return {}
    item, output = literals.get("item", "item"), literals.get("output", "")
    if item not in graph.params:
        context.problem(f"graph {name!r} has no parameter {item!r} to set to each item "
                        f"(parameters: {', '.join(graph.params) or 'none'})", "item")
    if output and output not in graph.document.outputs:
        context.problem(f"graph {name!r} has no output {output!r} "
                        f"(outputs: {', '.join(graph.document.outputs) or 'none'})", "output")
    return {}


@node("flow.map", category="flow", output="results",
      cache=sfumato.CachePolicy(fingerprint=_graph_fingerprint), describe_outputs=_check_mapped_graph)
def map_(items: Any, graph: str, item: str = "item", output: str = "",
         batch_size: Annotated[int, Field(ge=1, le=256)] = 8) -> Any:
    """Run ``graph`` once per item, its parameter ``item`` set to the item; the results in order.

    The runs share one schedule on the engine running this node (its caches
    and loaded models): work that does not depend on the item runs once, and
    a node with a batch function receives up to ``batch_size`` items per call.

    Args:
        items: the list to map over (prompts, seeds, numbers).
        graph: a plugin's graph type, or graph:NAME for a shipped graph.
        item: the graph parameter each item sets.
        output: the graph output to collect (default: every output, a record per item).
        batch_size: the most items one batched node call receives.
    """
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"flow.map maps over a list, got {type(items).__name__}")
    results = sfumato.run_nested(graph, [{item: value} for value in items], batch_size=batch_size)
    return [result[output] for result in results] if output else results
