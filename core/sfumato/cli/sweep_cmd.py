"""``sfumato run GRAPH --sweep ...``: many runs, batched locally or spread by an executor."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..errors import ParameterError
from ..sweep_runner import RunOutcome
from ..sweeps import combine, parse_axis
from .output import print_error, print_json, stderr, stdout
from .run_cmd import load_graph_argument, parse_memory, parse_sets


def sweep_command(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..registry import default_registry

    graph, stored_params, stored_seed = load_graph_argument(args.graph)
    axes = [parse_axis(text) for text in args.sweeps]
    param_sets = combine(axes, zip_axes=args.zip, base={**stored_params, **parse_sets(args.sets)})
    seed = args.seed if args.seed is not None else stored_seed
    output_dir = Path(args.out)
    started = time.perf_counter()
    if args.executor == "local":
        engine = Engine(cache=not args.no_cache, cache_dir=None if args.no_cache else args.cache_dir,
                        device=args.device, dtype=args.dtype, output_dir=output_dir,
                        max_memory=parse_memory(args.max_memory))
        from .progress import SweepProgress

        with SweepProgress(len(param_sets)) as progress:
            engine.observers.append(progress)
            outcomes = engine.run_many(graph, param_sets, batch_size=args.batch_size, seed=seed,
                                       params_from_text=True)
    else:
        factory = default_registry().executors.get(args.executor)
        if factory is None:
            known = ", ".join(["local", *sorted(default_registry().executors)])
            raise ParameterError(f"unknown executor {args.executor!r} (known: {known})")
        executor = factory(address=args.address, workers=args.workers, device=args.device, dtype=args.dtype)
        outcomes = executor.run_many(graph, param_sets, output_dir=output_dir, seed=seed,
                                     batch_size=args.batch_size, params_from_text=True)
    seconds = time.perf_counter() - started
    report = sweep_report(graph.name, outcomes, seconds, args.executor)
    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = output_dir / f"{graph.name}-sweep.json"
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.grid:
        x_axis, _, y_axis = args.grid.partition(",")
        if not y_axis:
            raise ParameterError("--grid expects two sweep axes: X,Y")
        from ..sweep_grid import labelled_grid

        report["grid"] = str(labelled_grid(outcomes, x_axis.strip(), y_axis.strip(),
                                           output_dir / f"{graph.name}-grid.png"))
    if args.json:
        print_json(report)
    else:
        print_sweep(report)
        stdout.print(f"report: {escape(str(report_path))}")
        if "grid" in report:
            stdout.print(f"grid: {escape(report['grid'])}")
    return 0 if report["counts"]["failed"] == 0 else 1


def sweep_report(graph: str, outcomes: list[RunOutcome], seconds: float, executor: str) -> dict[str, Any]:
    """The JSON report of a sweep: every run's parameters, outputs, status and time."""
    return {
        "graph": graph,
        "executor": executor,
        "seconds": round(seconds, 3),
        "counts": {"runs": len(outcomes), "ok": sum(o.status == "ok" for o in outcomes),
                   "failed": sum(o.status != "ok" for o in outcomes)},
        "runs": [o.as_dict() for o in outcomes],
    }


def print_sweep(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['graph']}: {report['counts']['ok']}/{report['counts']['runs']} runs ok "
                        f"in {report['seconds']:.2f}s", title_justify="left")
    for column in ("run", "params", "status", "seconds", "files"):
        table.add_column(column)
    for run in report["runs"][:50]:
        params = ", ".join(f"{k}={v}" for k, v in run["params"].items())[:60]
        status = "[green]ok[/]" if run["status"] == "ok" else f"[red]{run['status']}[/] {escape(run.get('error', '')[:50])}"
        table.add_row(str(run["index"]), escape(params), status, f"{run['seconds']:.2f}", str(len(run["files"])))
    stderr.print(table)
    for run in report["runs"]:
        if run["status"] != "ok":
            print_error(f"run {run['index']} failed: {run.get('error', '')}")
