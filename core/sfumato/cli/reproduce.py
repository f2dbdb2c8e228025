"""Running a PNG again: what changed since it was made, and ``sfumato run IMAGE.png --check``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..errors import GraphValidationError, ParameterError, SfumatoError
from ..run.metadata import (
    MetadataError,
    compare_pixels,
    metadata_differences,
    model_changes,
    provenance_issues,
    read_png_metadata,
)
from .arguments import load_graph_argument, parse_memory
from .output import print_json, stderr, stdout


def is_png(path_text: str) -> bool:
    return Path(path_text).suffix.lower() == ".png"


def check_provenance(path_text: str) -> dict[str, Any] | None:
    """For a sfumato PNG: warn about node and plugin versions that differ from the ones that made it.

    Raises :class:`GraphValidationError` naming the node types (with the version
    and plugin that made the image) that are not installed. Returns the stored
    metadata, or ``None`` for a graph file or a PNG whose metadata cannot be read
    (reading the graph then reports why).
    """
    if not is_png(path_text):
        return None
    from ..registry import default_registry

    try:
        data = read_png_metadata(path_text)
    except (OSError, MetadataError):
        return None
    missing, changed = provenance_issues(data, default_registry())
    if missing:
        raise GraphValidationError(missing, f"{path_text} (stored graph)")
    for issue in changed:
        stderr.print(f"[yellow]warning:[/] {escape(issue.message)} [dim](node {escape(issue.node or '')})[/]")
    for message in model_changes(data, default_registry().models):  # weights replaced since (hashes differ)
        stderr.print(f"[yellow]warning:[/] {escape(message)}")
    return data


def check_command(args: argparse.Namespace) -> int:
    """Make a PNG again from its metadata in a temporary folder; 0 when the pixels match exactly, 1 when not."""
    if not is_png(args.graph):
        raise ParameterError(f"--check makes a PNG made by sfumato again; {args.graph!r} is no .png")
    given = [option for option, value in (("--set", args.sets), ("--seed", args.seed is not None),
                                          ("--sweep", args.sweeps), ("--executor", args.executor != "local"))
             if value]
    if given:
        raise ParameterError(f"--check makes the image again as it was made; it takes no {', '.join(given)}")
    graph, params, seed = load_graph_argument(args.graph)  # reports a PNG without readable metadata
    made = check_provenance(args.graph)
    if made is None:
        raise ParameterError(f"{args.graph}: its sfumato metadata cannot be read")
    from ..run.engine import Engine
    from .progress import ProgressDisplay

    with tempfile.TemporaryDirectory(prefix="sfumato-check-") as folder:
        # No cache: every node computes again, as it did when the image was made.
        engine = Engine(cache=False, device=args.device, dtype=args.dtype, output_dir=folder, jobs=args.jobs,
                        max_memory=parse_memory(args.max_memory))
        display = ProgressDisplay()
        engine.observers.append(display)
        with display:
            plan = engine.plan(graph, params, params_from_text=True, seed=seed)
            report = engine.execute(plan).report
        remade = _same_image(report.files, made)
        if remade is None:
            # Not bad input: the graph no longer makes the image (exit 1, like any difference).
            raise SfumatoError(f"{args.graph} differs: made again, its graph wrote no image {made.get('index')} "
                               f"from node {made.get('node')!r}, which saved it")
        comparison = compare_pixels(args.graph, remade)
        differences = metadata_differences(made, read_png_metadata(remade))
    result = {"image": args.graph, "match": comparison.equal, "mismatch": comparison.mismatch,
              "max_difference": comparison.max_difference, "pixels_different": comparison.pixels_different,
              "pixels": comparison.pixels, "differences": differences}
    if args.json:
        print_json(result)
    else:
        _print_check(result)
    return 0 if comparison.equal else 1


def _same_image(files: list[str], made: dict[str, Any]) -> str | None:
    """The file of a run that is the image ``made`` describes: the same saver node and index."""
    for path in files:
        if not is_png(path):
            continue
        try:
            data = read_png_metadata(path)
        except MetadataError:
            continue
        if data.get("node") == made.get("node") and data.get("index") == made.get("index"):
            return path
    return None


def _print_check(result: dict[str, Any]) -> None:
    image = escape(result["image"])
    if result["match"]:
        stdout.print(f"[green]match[/]: {image} made again has exactly the same pixels")
        return
    if result["mismatch"]:
        stdout.print(f"[red]differs[/]: {image} made again has another size or mode: {escape(result['mismatch'])}")
    else:
        stdout.print(f"[red]differs[/]: {image} made again differs in {result['pixels_different']:,} of "
                     f"{result['pixels']:,} pixels (largest difference {result['max_difference']} of one channel)")
    if result["differences"]:
        stdout.print("what made it differently:")
        for line in result["differences"]:
            stdout.print(f"  {escape(line)}")
    else:
        stdout.print("no recorded version, device or dtype differs: a node may not be deterministic "
                     "(unseeded randomness, or nondeterministic GPU kernels)")
