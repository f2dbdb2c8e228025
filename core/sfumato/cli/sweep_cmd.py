"""``sfumato run GRAPH --sweep ...``: many runs, batched locally or spread by an executor."""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..errors import ParameterError
from ..run.report import RunOutcome
from ..run.sweeps import combine, parse_axis
from .arguments import load_graph_argument, parse_memory, parse_sets
from .output import print_error, print_json, stderr, stdout

#: Rows of the sweep table; the JSON report has every run.
_TABLE_ROWS = 50


def sweep_command(args: argparse.Namespace) -> int:
    from ..registry import default_registry
    from ..run.engine import Engine

    graph, stored_params, stored_seed = load_graph_argument(args.graph)
    axes = [parse_axis(text) for text in args.sweeps]
    param_sets = combine(axes, zip_axes=args.zip, base={**stored_params, **parse_sets(args.sets)})
    if args.grid:  # checked before any run: a grid over an axis that was not swept cannot be drawn
        from ..run.sweep_grid import grid_axes

        grid_axes(args.grid, axes)
    from ..graph.shipped import check_example_paths

    check_example_paths(graph, param_sets[0])  # shipped graphs' examples/ data is in the repository only
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
        from .progress import SweepProgress

        with SweepProgress(len(param_sets), f"sweep runs on {args.executor} (starting workers)") as progress:
            options: dict[str, Any] = {}
            # Executors that report each finished run get a live bar; others show the elapsed time until the end.
            if "on_outcome" in inspect.signature(executor.run_many).parameters:
                options["on_outcome"] = progress.run_done
            outcomes = executor.run_many(graph, param_sets, output_dir=output_dir, seed=seed,
                                         batch_size=args.batch_size, params_from_text=True, **options)
    seconds = time.perf_counter() - started
    report = sweep_report(graph.name, outcomes, seconds, args.executor, axes={a.name: list(a.values) for a in axes})
    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = output_dir / f"{graph.name}-sweep.json"
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.grid:
        x_axis, _, y_axis = args.grid.partition(",")
        if not y_axis:
            raise ParameterError("--grid expects two sweep axes: X,Y")
        from ..run.sweep_grid import labelled_grid

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


def run_seconds(outcome: RunOutcome) -> float:
    """A run's own time: what its nodes took (its share of batched calls), without model loads.

    Runs of a sweep advance together, so the wall time from a run's start to
    its end is the whole sweep's for every run; the sum of its node times is not.
    """
    report = outcome.report
    if report is None:
        return outcome.seconds
    return sum(record.seconds for record in report.nodes.values())


def sweep_report(graph: str, outcomes: list[RunOutcome], seconds: float, executor: str,
                 axes: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The JSON report of a sweep: the axes, every run's parameters, outputs, status and own time, model loads."""
    runs = []
    models: list[dict[str, Any]] = []
    for outcome in outcomes:
        data = outcome.as_dict()
        data["seconds"] = round(run_seconds(outcome), 6)
        runs.append(data)
        if outcome.report is not None:
            models.extend(entry for entry in outcome.report.models if entry not in models)
    return {
        "graph": graph,
        "executor": executor,
        "seconds": round(seconds, 3),
        "axes": dict(axes or {}),
        "counts": {"runs": len(outcomes), "ok": sum(o.status == "ok" for o in outcomes),
                   "failed": sum(o.status != "ok" for o in outcomes)},
        "models": models,
        "runs": runs,
    }


def _cell(value: Any, width: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_sweep(report: dict[str, Any]) -> None:
    """The sweep as a table: one row per run with the values swept for it, its status and its own time."""
    table = Table(title=f"{report['graph']}: {report['counts']['ok']}/{report['counts']['runs']} runs ok "
                        f"in {report['seconds']:.2f}s", title_justify="left")
    swept = list(report.get("axes", {}))
    for column in ("run", *swept, "status", "seconds", "files"):
        table.add_column(column, justify="right" if column in ("run", "seconds", "files") else "left")
    for run in report["runs"][:_TABLE_ROWS]:
        values = [escape(_cell(run["params"].get(name, ""))) for name in swept]
        status = "[green]ok[/]" if run["status"] == "ok" else f"[red]{escape(run['status'])}[/]"
        table.add_row(str(run["index"]), *values, status, f"{run['seconds']:.2f}", str(len(run["files"])))
    if len(report["runs"]) > _TABLE_ROWS:
        table.add_row(f"... {len(report['runs']) - _TABLE_ROWS} more", *[""] * (len(swept) + 3))
    stderr.print(table)
    for entry in report.get("models", []):
        if entry.get("event") == "model_loaded":
            stderr.print(f"[dim]model load: {escape(entry['model'])} in {entry['seconds']:.2f}s (not in run times)[/]")
    # One line per distinct error, with the runs it failed (a bad prompt fails once per seed).
    failed: dict[str, list[str]] = {}
    for run in report["runs"]:
        if run["status"] != "ok":
            failed.setdefault(run.get("error", ""), []).append(str(run["index"]))
    for error, indices in failed.items():
        print_error(f"run{'s' if len(indices) > 1 else ''} {', '.join(indices)} failed: {error}")
