"""Run sfumato's benchmarks: ``python -m benchmarks [--quick] [--only NAME ...]``.

Each benchmark prints its measurements and, last, its ratio; all results are
written to ``benchmarks/results.json`` (``--quick`` runs tiny sizes only, as the
smoke test does, and writes nothing unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


def benchmarks(quick: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    from . import (bench_cold_start, bench_encoding, bench_families, bench_generation, bench_incremental,
                   bench_overhead, bench_schedulers, bench_server, bench_speed, bench_sweep)

    if quick:
        return {
            "overhead": lambda: bench_overhead.run(sizes=(10, 20), repeats=2, haystack_limit=20),
            "generation": lambda: bench_generation.run(steps=2, repeats=2),
            "incremental": lambda: bench_incremental.run(repeats=2),
            "schedulers": lambda: bench_schedulers.run(n=4, schedulers=("dpm++",), steps=(2,), plot=False),
            "cold_start": lambda: bench_cold_start.run(repeats=1),
            "sweep": lambda: bench_sweep.run(count=3, with_ray=False),
            "encoding": lambda: bench_encoding.run(texts=8, sizes=(100,), repeats=2),
            "server": lambda: bench_server.run(jobs=5),
            "families": lambda: bench_families.run(steps=2, repeats=2),
            "speed": lambda: bench_speed.run(size=64, steps=2, tiny_n=4, tiny_steps=2,
                                             sd_recipes={"fp32 (default)": {}, "step_cache=2": {"step_cache": 2}},
                                             tiny_recipes={"fp32 (default)": {}, "step_cache=2": {"step_cache": 2}}),
        }
    return {
        "overhead": bench_overhead.run,
        "generation": bench_generation.run,
        "incremental": bench_incremental.run,
        "schedulers": bench_schedulers.run,
        "cold_start": bench_cold_start.run,
        "sweep": bench_sweep.run,
        "encoding": bench_encoding.run,
        "server": bench_server.run,
        "families": bench_families.run,
        "speed": bench_speed.run,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results.json)")
    args = parser.parse_args(argv)
    chosen = benchmarks(args.quick)
    if args.only:
        unknown = set(args.only) - set(chosen)
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only}
    results: dict[str, Any] = {"date": date.today().isoformat(), "machine": machine(), "results": {}}
    for name, function in chosen.items():
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        results["results"][name] = function()
        results["results"][name]["wall_s"] = time.perf_counter() - started
    out = args.out or (None if args.quick else HERE / "results.json")
    if out is not None:
        previous = json.loads(out.read_text()) if out.exists() else {"results": {}}
        previous["results"].update(results["results"])
        previous.update({"date": results["date"], "machine": results["machine"]})
        out.write_text(json.dumps(previous, indent=2, default=str) + "\n")
        print(f"results written to {out}")
    return 0


def machine() -> dict[str, Any]:
    import os

    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


if __name__ == "__main__":
    raise SystemExit(main())
