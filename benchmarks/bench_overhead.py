"""Orchestration overhead on graphs of trivial nodes: sfumato vs plain Python vs Haystack 2.

Shapes: a chain (each node adds one to its parent) and a fan-out/fan-in (one
source, n/2 parallel nodes, then a binary tree of adds back to one root).
Reported per node: sfumato cold (fresh engine: validate, plan, run), sfumato
fully cached (same engine, second run), validate+plan alone, plain Python
calls of the same functions (the floor), and Haystack 2 where installed, up
to the size it handles in reasonable time.
"""

from __future__ import annotations

import gc
import types
from typing import Any

import sfumato
from sfumato import Engine, Graph, Registry, node, plan_run

from .timing import alternate, fmt


@node("bench.const", category="bench", output="value")
def const(value: float = 0.0) -> float:
    return value


@node("bench.inc", category="bench", output="value")
def inc(x: float) -> float:
    return x + 1.0


@node("bench.add", category="bench", output="value")
def add(a: float, b: float) -> float:
    return a + b


def bench_registry() -> Registry:
    plugin = types.ModuleType("sfumato_bench_nodes")
    plugin.sfumato_node_types = sfumato.hookimpl(lambda: [const, inc, add])  # type: ignore[attr-defined]
    return Registry.load(entry_points=False, plugins=[plugin])


def chain(n: int) -> dict[str, Any]:
    nodes = {"n0": {"type": "bench.const", "inputs": {"value": 0}}}
    for i in range(1, n):
        nodes[f"n{i}"] = {"type": "bench.inc", "inputs": {"x": {"from": f"n{i - 1}.value"}}}
    return {"version": 1, "nodes": nodes, "outputs": {"out": f"n{n - 1}.value"}}


def fan(n: int) -> dict[str, Any]:
    width = max(2, n // 2)
    nodes = {"src": {"type": "bench.const", "inputs": {"value": 0}}}
    level = []
    for i in range(width):
        nodes[f"m{i}"] = {"type": "bench.inc", "inputs": {"x": {"from": "src.value"}}}
        level.append(f"m{i}")
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            name = f"r{depth}_{j}"
            nodes[name] = {"type": "bench.add", "inputs": {"a": {"from": f"{level[j]}.value"},
                                                            "b": {"from": f"{level[j + 1]}.value"}}}
            nxt.append(name)
        if len(level) % 2:
            nxt.append(level[-1])
        level, depth = nxt, depth + 1
    return {"version": 1, "nodes": nodes, "outputs": {"out": f"{level[0]}.value"}}


def plain_python(document: dict[str, Any]) -> float:
    """The same computation as direct function calls, in topological (file) order."""
    values: dict[str, float] = {}
    functions = {"bench.const": const, "bench.inc": inc, "bench.add": add}
    for node_id, entry in document["nodes"].items():
        kwargs = {k: (values[v["from"].split(".")[0]] if isinstance(v, dict) else v) for k, v in entry["inputs"].items()}
        values[node_id] = functions[entry["type"]](**kwargs)
    out = document["outputs"]["out"].split(".")[0]
    return values[out]


def haystack_pipeline(document: dict[str, Any]) -> Any:
    """The same graph as a Haystack 2 pipeline (None when haystack-ai is not installed)."""
    try:
        from haystack import Pipeline, component
    except ImportError:
        return None

    @component
    class Const:
        @component.output_types(value=float)
        def run(self, value: float = 0.0) -> dict:
            return {"value": value}

    @component
    class Inc:
        @component.output_types(value=float)
        def run(self, x: float) -> dict:
            return {"value": x + 1.0}

    @component
    class Add:
        @component.output_types(value=float)
        def run(self, a: float, b: float) -> dict:
            return {"value": a + b}

    kinds = {"bench.const": Const, "bench.inc": Inc, "bench.add": Add}
    pipeline = Pipeline(max_runs_per_component=10)
    for node_id, entry in document["nodes"].items():
        pipeline.add_component(node_id, kinds[entry["type"]]())
    for node_id, entry in document["nodes"].items():
        for name, value in entry["inputs"].items():
            if isinstance(value, dict):
                pipeline.connect(value["from"], f"{node_id}.{name}")
    return pipeline


def run(sizes: tuple[int, ...] = (100, 1000, 10000), repeats: int = 5, haystack_limit: int = 1000) -> dict[str, Any]:
    registry = bench_registry()
    results: dict[str, Any] = {}
    for shape, make in (("chain", chain), ("fan", fan)):
        for n in sizes:
            document = make(n)
            count = len(document["nodes"])
            graph = Graph.from_dict(document)
            warm = Engine(registry, device="cpu")
            warm.run(graph)
            contenders = {
                "python": lambda: plain_python(document),
                "sfumato_cold": lambda: Engine(registry, device="cpu").run(Graph.from_dict(document)),
                "sfumato_cached": lambda: warm.run(graph),
                "validate_plan": lambda: plan_run(Graph.from_dict(document), registry),
            }
            pipeline = haystack_pipeline(document) if n <= haystack_limit else None
            if pipeline is not None:
                contenders["haystack"] = lambda: pipeline.run({})
            # Collect garbage before each timing (fair to every contender; as timeit does, but with the
            # collector left on during the timing itself).
            measured = alternate(contenders, repeats=repeats if n < 10000 else max(2, repeats // 2),
                                 setup=lambda name: gc.collect())
            entry = {name: {**m.as_dict(), "per_node_s": m.median / count} for name, m in measured.items()}
            entry["nodes"] = count
            results[f"{shape}-{n}"] = entry
            line = ", ".join(f"{name} {fmt(m.median / count)}/node (±{m.spread:.0%})" for name, m in measured.items())
            print(f"  {shape:<5} {count:>6} nodes: {line}")
    cold_10k = results.get("chain-10000", results[f"chain-{sizes[-1]}"])
    results["ratio"] = {
        "sfumato_cold_per_node_us_at_largest_chain": cold_10k["sfumato_cold"]["per_node_s"] * 1e6,
        "linearity_cold_10000_vs_100": (results[f"chain-{sizes[-1]}"]["sfumato_cold"]["per_node_s"]
                                        / results[f"chain-{sizes[0]}"]["sfumato_cold"]["per_node_s"]),
    }
    if "haystack" in results.get(f"chain-{min(haystack_limit, sizes[-1])}", {}):
        at = results[f"chain-{min(haystack_limit, max(s for s in sizes if s <= haystack_limit))}"]
        results["ratio"]["haystack_over_sfumato_cold"] = at["haystack"]["median_s"] / at["sfumato_cold"]["median_s"]
    print("  ratio: " + ", ".join(f"{k} = {v:.3g}" for k, v in results["ratio"].items()))
    return results
