"""Cold start of ``sfumato run graphs/text-to-image.json`` from a new process, broken down; and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "graphs" / "text-to-image.json"

_PROBE = r"""
import json, resource, sys, time
started = time.perf_counter()
import sfumato
from sfumato import Engine, Graph
imported_core = time.perf_counter()
events = []
engine = Engine(device="cpu", output_dir=sys.argv[2], observers=[events.append])
graph = Graph.load(sys.argv[1])
plan = engine.plan(graph)
planned = time.perf_counter()
result = engine.execute(plan)
finished = time.perf_counter()
loads = sum(e.seconds for e in events if e.kind == "model_loaded")
nodes = {n: r.seconds for n, r in result.report.nodes.items()}
print(json.dumps({
    "import_sfumato_s": imported_core - started,
    "load_plugins_validate_plan_s": planned - imported_core,
    "run_s": finished - planned,
    "model_loading_s": loads,
    "nodes_s": nodes,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run(repeats: int = 3) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        out = tempfile.mkdtemp(prefix="sfumato-cold-")
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-c", _PROBE, str(GRAPH), out], capture_output=True, text=True,
                                   check=True)
        wall = time.perf_counter() - started
        data = json.loads(completed.stdout.strip().splitlines()[-1])
        data["process_wall_s"] = wall
        samples.append(data)
    best = min(samples, key=lambda d: d["process_wall_s"])
    validate = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sfumato.cli.main", "validate", str(GRAPH)], check=True,
                       capture_output=True)
        validate.append(time.perf_counter() - started)
    nodes = best["nodes_s"]
    generate = nodes.get("generate", 0.0)
    print(f"  process wall {best['process_wall_s']:.2f} s = import sfumato {best['import_sfumato_s']:.2f} s"
          f" + plugins/validate/plan {best['load_plugins_validate_plan_s']:.2f} s + run {best['run_s']:.2f} s"
          f" (model loading {best['model_loading_s']:.2f} s, generate node {generate:.2f} s incl. its load)"
          f" + interpreter start/exit")
    print(f"  peak RSS {best['peak_rss_mb']:.0f} MB")
    print(f"  sfumato validate: {min(validate):.2f} s (median {sorted(validate)[len(validate) // 2]:.2f} s)")
    print(f"  ratio: validate_s / 1 s goal = {min(validate):.2f}")
    return {"samples": samples, "best": best, "validate_s": validate,
            "ratio": {"validate_over_goal": min(validate) / 1.0}}
