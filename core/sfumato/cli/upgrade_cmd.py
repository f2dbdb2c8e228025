"""``sfumato upgrade``: rewrite a graph file for the installed node versions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .output import stderr, stdout


def add_parsers(subparsers: Any) -> None:
    upgrade = subparsers.add_parser(
        "upgrade", help="migrate a graph file to the installed node versions and write it back")
    upgrade.add_argument("graph", help="a graph .json file, or a .png saved by sfumato (then give --output)")
    upgrade.add_argument("--output", "-o", default=None, help="write here instead of rewriting GRAPH")
    upgrade.set_defaults(handler=upgrade_command)


def upgrade_command(args: argparse.Namespace) -> int:
    from ..errors import ParameterError
    from ..graph.migrations import upgrade_graph
    from ..registry import default_registry
    from .arguments import load_graph_argument

    source = Path(args.graph)
    if source.suffix.lower() == ".png" and not args.output:
        raise ParameterError("an image's stored graph is upgraded into a new file: give --output FILE.json")
    graph, _, _ = load_graph_argument(args.graph)
    result = upgrade_graph(graph, default_registry())
    target = Path(args.output) if args.output else Path(graph.source)
    for change in result.changes:
        stderr.print(f"{change.path}: {change.message}", markup=False, highlight=False)
    result.graph.save(target)
    what = f"{len(result.changes)} node(s) migrated" if result.changes else "no node needed migrating"
    stdout.print(f"wrote {target} ({what}; node versions recorded)", markup=False, highlight=False)
    return 0
