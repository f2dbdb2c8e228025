"""``sfumato run`` and ``sfumato validate``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..errors import GraphIssue, GraphValidationError, NodeExecutionError, ParameterError, RunFailedError, SfumatoError
from ..plugin.devices import check_device_available
from ..plugin.limits import LimitExceededError, set_limits
from ..run.report import RunReport
from .arguments import check_run_settings, load_graph_argument, parse_limits, parse_memory, parse_sets
from .output import print_error, print_graph_issues, print_json, stderr, stdout
from .reproduce import check_command, check_provenance

_TABLE_ROWS = 40
LIMIT_HELP = ("raise or lower a resource limit (repeatable): max_image_pixels, max_batch_pixels, "
              "max_text_length or max_sweep_runs")


def add_parsers(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run a graph file (or the graph stored in a PNG made by sfumato)")
    run.add_argument("graph", help="a graph .json file, or a .png saved by sfumato")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                     help="set a graph parameter (repeatable)")
    run.add_argument("--out", default="out", help="output folder (default: out)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    run.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16 (default: auto)")
    run.add_argument("--seed", type=int, default=None, help="the run seed (default: the graph's 'seed' parameter, else 0)")
    run.add_argument("--jobs", type=int, default=1, help="independent nodes to run at once (default: 1)")
    run.add_argument("--cache-dir", default=None, help="keep results on disk here, across runs")
    run.add_argument("--no-cache", action="store_true", help="do not reuse any cached result")
    run.add_argument("--keep-going", action="store_true", help="let independent branches finish after a failure")
    run.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=NUMBER",
                     help=LIMIT_HELP)
    run.add_argument("--max-memory", action="append", default=[], metavar="[DEVICE=]SIZE",
                     help="model memory budget, e.g. 4GB or cuda=10GB (repeatable)")
    run.add_argument("--json", action="store_true", help="print the run report as JSON")
    run.add_argument("--check", action="store_true",
                     help="for a PNG: make it again in a temporary folder and report whether the pixels match "
                          "(exit 0) or what differs (exit 1)")
    sweep = run.add_argument_group("sweeps")
    sweep.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="NAME=VALUES",
                       help="run once per value: 0..7 (range), a,b,c (list) or @file (one per line); repeatable")
    sweep.add_argument("--zip", action="store_true", help="pair the sweep axes instead of crossing them")
    sweep.add_argument("--batch-size", type=int, default=8, help="most runs merged into one batched call (default: 8)")
    sweep.add_argument("--grid", metavar="X,Y", help="also write a labelled grid of images over two sweep axes")
    sweep.add_argument("--executor", default="local", help="where runs execute: local, or one a plugin adds (ray)")
    sweep.add_argument("--address", default=None, help="executor address (ray: auto or ray://host:port)")
    sweep.add_argument("--workers", type=int, default=None, help="executor workers (ray on CPU)")
    run.set_defaults(handler=run_command)

    validate = subparsers.add_parser("validate", help="check a graph file and report every problem")
    validate.add_argument("graph")
    validate.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    validate.add_argument("--json", action="store_true", help="print the problems as JSON")
    validate.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=NUMBER",
                          help=LIMIT_HELP)
    validate.set_defaults(handler=validate_command)


def run_command(args: argparse.Namespace) -> int:
    check_run_settings(args)
    # --limit holds for this command only (main() may be called again in the same process).
    previous = set_limits(parse_limits(args.limits))
    try:
        return _run(args)
    finally:
        set_limits(previous)


def _run(args: argparse.Namespace) -> int:
    from ..run.engine import Engine

    if args.executor == "local":
        # A GPU that is not there is found now, before any model loads (an executor's
        # workers may have GPUs that this machine lacks, so only local runs are checked).
        check_device_available(args.device)
    if args.check:
        return check_command(args)
    check_provenance(args.graph)  # a PNG made by node or plugin versions that are gone or differ
    if args.sweeps or args.executor != "local":
        from .sweep_cmd import sweep_command

        return sweep_command(args)
    graph, stored_params, stored_seed = load_graph_argument(args.graph)
    sets = parse_sets(args.sets)
    params: dict[str, Any] = {**stored_params, **sets}
    from ..graph.shipped import check_example_paths

    check_example_paths(graph, params)  # shipped graphs' examples/ data is in the repository only
    if "seed" in sets:
        stored_seed = None  # a new seed parameter means a new run seed, not the stored one
    engine = Engine(cache=not args.no_cache, cache_dir=None if args.no_cache else args.cache_dir,
                    device=args.device, dtype=args.dtype, output_dir=args.out, jobs=args.jobs,
                    max_memory=parse_memory(args.max_memory))
    seed = args.seed if args.seed is not None else stored_seed
    from .progress import ProgressDisplay

    display = ProgressDisplay()
    engine.observers.append(display)
    report: RunReport | None = None
    code = 0
    try:
        with display:
            # Values from a PNG are already typed; only strings are parsed.
            plan = engine.plan(graph, params, params_from_text=True, seed=seed)
            result = engine.execute(plan, keep_going=args.keep_going)
        report = result.report
    except NodeExecutionError as error:
        # A node refusing a size over the limits is bad input (2), not a failed run (1).
        report, code = error.report, 2 if isinstance(error.original, LimitExceededError) else 1
        print_error(str(error))
    except RunFailedError as error:
        report, code = error.report, 1
        for failure in error.failures:
            print_error(str(failure))
    if report is not None:
        if args.json:
            print_json(report.as_dict())
        else:
            print_report(report)
    return code


def print_report(report: RunReport) -> None:
    print_warnings(report.warnings)
    table = Table(title=f"{report.graph}: {report.status} in {report.seconds:.2f}s", title_justify="left")
    table.add_column("node")
    table.add_column("type")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    colours = {"ran": "green", "cached": "cyan", "skipped": "dim", "failed": "red", "blocked": "yellow"}
    for index, (node_id, record) in enumerate(report.nodes.items()):
        if index == _TABLE_ROWS:
            table.add_row(f"... {len(report.nodes) - _TABLE_ROWS} more", "", "", "")
            break
        status = f"[{colours.get(record.status, 'white')}]{record.status}[/]"
        if record.error:
            status += f" [dim]{escape(record.error[:60])}[/]"
        table.add_row(escape(node_id), escape(record.type), status, f"{record.seconds:.3f}")
    stderr.print(table)
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("ran", "cached", "skipped", "failed", "blocked") if report.count(s))
    stderr.print(f"[dim]{counts}[/]")
    for name, value in report.outputs.items():
        stdout.print(f"{escape(name)} = {escape(json.dumps(value, ensure_ascii=False))}")
    for path in report.files:
        stdout.print(f"wrote {escape(path)}")


def validate_command(args: argparse.Namespace) -> int:
    previous = set_limits(parse_limits(args.limits))
    try:
        return _validate(args)
    finally:
        set_limits(previous)


def _validate(args: argparse.Namespace) -> int:
    from ..registry import default_registry
    from ..run.planning import plan_run, validate_graph

    warnings: list[GraphIssue] = []  # reported, and never a reason to refuse the graph
    try:
        graph, stored_params, _ = load_graph_argument(args.graph)
        found = validate_graph(graph, default_registry(), warnings=True)
        issues = [issue for issue in found if issue.severity != "warning"]
        warnings = [issue for issue in found if issue.severity == "warning"]
        if not issues and args.sets:
            # The values set may choose another backend: its warnings are the ones that apply.
            warnings = plan_run(graph, default_registry(), {**stored_params, **parse_sets(args.sets)},
                                params_from_text=True).warnings
    except GraphValidationError as error:
        issues = error.issues
    except ParameterError as error:
        issues = [GraphIssue("params", str(error))]
    except SfumatoError as error:  # any other refusal of the input (a limit, damaged PNG metadata)
        issues = [GraphIssue("$", str(error))]
    if args.json:
        print_json({"valid": not issues, "issues": [i.as_dict() for i in issues],
                    "warnings": [w.as_dict() for w in warnings]})
        return 2 if issues else 0
    print_warnings(warnings)
    if issues:
        print_graph_issues(GraphValidationError(issues, args.graph))
    else:
        stdout.print(f"[green]valid[/]: {escape(args.graph)} ({len(graph.nodes)} nodes)")
    return 2 if issues else 0


def print_warnings(warnings: list[Any]) -> None:
    """Validation warnings (``GraphIssue`` or its dict), one line each on stderr; they do not fail anything."""
    for warning in warnings:
        path, message = (warning["path"], warning["message"]) if isinstance(warning, dict) else \
            (warning.path, warning.message)
        stderr.print(f"[yellow]warning[/]: {escape(path)}: {escape(message)}")
