"""``sfumato draw``: Mermaid (default), DOT, or a PNG/SVG picture of a graph."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .output import print_error, stdout


def add_parsers(subparsers: Any) -> None:
    draw = subparsers.add_parser("draw", help="draw a graph as Mermaid, DOT, PNG or SVG")
    draw.add_argument("graph", help="a graph .json file, or a .png saved by sfumato")
    draw.add_argument("--format", choices=["mermaid", "dot", "png", "svg"], default=None,
                      help="default: mermaid, or the --output file's extension")
    draw.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    draw.add_argument("--expand", action="store_true",
                      help="draw each subgraph's inner nodes (default: one box per subgraph node)")
    draw.set_defaults(handler=draw_command)


def draw_command(args: argparse.Namespace) -> int:
    from ..graph.drawing import render_picture, to_dot, to_mermaid
    from .arguments import load_graph_argument

    graph, _, _ = load_graph_argument(args.graph)
    if args.expand:
        from ..graph.subgraph import expand_subgraphs
        from ..registry import default_registry

        graph = expand_subgraphs(graph, default_registry().graph_types).graph
    output = Path(args.output) if args.output else None
    fmt = args.format or (output.suffix.lstrip(".").lower() if output and output.suffix else "mermaid")
    if fmt in ("png", "svg"):
        if output is None:
            print_error(f"--format {fmt} needs --output FILE.{fmt}")
            return 2
        try:
            render_picture(graph, output.with_suffix(f".{fmt}"))
        except RuntimeError as error:
            print_error(str(error))
            return 1
        stdout.print(f"wrote {output.with_suffix('.' + fmt)}")
        return 0
    text = to_dot(graph) if fmt == "dot" else to_mermaid(graph)
    if output is None:
        stdout.out(text, end="")
    else:
        output.write_text(text)
        stdout.print(f"wrote {output}")
    return 0
