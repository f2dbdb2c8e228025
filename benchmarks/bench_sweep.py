"""A 32-prompt sweep of the text-to-image graph: batched vs one run at a time; Ray (2 workers) vs local."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import fmt

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow", "purple", "white", "red", "blue"]
SHAPES = ["circle", "square", "triangle", "square"]


def prompts(count: int) -> list[str]:
    return [f"a {COLOURS[i % 8]} {SHAPES[(i // 8) % 4]} on a {['black', 'gray'][i % 2]} background"
            for i in range(count)]


def run(count: int = 32, with_ray: bool = True) -> dict[str, Any]:
    from sfumato import Engine, Graph

    graph = Graph.load(REPO / "graphs" / "text-to-image.json")
    param_sets = [{"prompt": p, "batch_size": 1, "steps": 20} for p in prompts(count)]
    out = Path(tempfile.mkdtemp(prefix="sfumato-sweep-"))
    results: dict[str, Any] = {}
    engine = Engine(device="cpu", cache=False, output_dir=out / "warm")
    engine.run(graph, batch_size=1)  # load models once for both contenders

    started = time.perf_counter()
    for params in param_sets:
        engine.run(graph, params, output_dir=out / "single")
    results["one_at_a_time_s"] = time.perf_counter() - started

    started = time.perf_counter()
    outcomes = engine.run_many(graph, param_sets, batch_size=32, output_dir=out / "batched")
    results["batched_s"] = time.perf_counter() - started
    assert all(o.status == "ok" for o in outcomes)
    speedup = results["one_at_a_time_s"] / results["batched_s"]
    print(f"  {count} runs one at a time {fmt(results['one_at_a_time_s'])}, batched {fmt(results['batched_s'])}")
    results["ratio"] = {"batched_speedup": speedup}
    if with_ray:
        try:
            from sfumato_ray.executor import RayExecutor
        except ImportError:
            print("  ray not installed: skipped")
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            started = time.perf_counter()
            remote = RayExecutor(workers=2, device="cpu").run_many(graph, param_sets, output_dir=out / "ray",
                                                                   batch_size=16)
            results["ray_2_workers_s"] = time.perf_counter() - started
            assert all(o.status == "ok" for o in remote)
            results["ratio"]["ray_over_local_batched"] = results["ray_2_workers_s"] / results["batched_s"]
            print(f"  ray, 2 workers (cluster start and model loads included): {fmt(results['ray_2_workers_s'])}")
    print("  ratio: " + ", ".join(f"{k} = {v:.2f}" for k, v in results["ratio"].items()))
    return results
