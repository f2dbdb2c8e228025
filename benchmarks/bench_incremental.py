"""Incremental re-runs of the text-to-image graph: change one post-processing value, re-run.

In one process (the engine's memory cache) and across processes (``--cache-dir``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import alternate, fmt

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "graphs" / "text-to-image.json"


def run(repeats: int = 5) -> dict[str, Any]:
    from sfumato import Engine, Graph

    graph = Graph.load(GRAPH)
    out = Path(tempfile.mkdtemp(prefix="sfumato-bench-"))
    warm = Engine(device="cpu", output_dir=out)
    warm.run(graph)  # loads models once; both contenders below then measure graph work only
    factors = iter(x / 100 for x in range(200, 100000))

    def cold() -> None:
        warm.clear_cache()
        warm.run(graph)

    def changed_postprocess() -> None:
        warm.run(graph, upscale=next(factors))

    measured = alternate({"cold_run": cold, "rerun_upscale_changed": changed_postprocess}, repeats=repeats)
    ratio = measured["rerun_upscale_changed"].median / measured["cold_run"].median
    for name, m in measured.items():
        print(f"  {name:<24} {fmt(m.median)} (±{m.spread:.0%})")
    print(f"  in-process: re-run / cold = {ratio:.3f}")

    cache = out / "cache"

    def cli(*extra: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sfumato.cli.main", "run", str(GRAPH), "--out", str(out / "cli"),
                        "--cache-dir", str(cache), "--device", "cpu", "--json", *extra], check=True,
                       capture_output=True)
        return time.perf_counter() - started

    first = cli()
    second = cli("--set", "upscale=3")
    report = {"cli_first_s": first, "cli_rerun_changed_upscale_s": second}
    print(f"  across processes (--cache-dir): first {fmt(first)}, re-run with a changed upscale {fmt(second)} "
          f"(ratio {second / first:.3f}; both include Python + torch start-up)")
    return {name: m.as_dict() for name, m in measured.items()} | report | {
        "ratio": {"in_process_rerun_over_cold": ratio, "cross_process_rerun_over_first": second / first}}
