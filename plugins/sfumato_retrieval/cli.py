"""``sfumato index build|query``: retrieval indexes from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parsers(subparsers: Any) -> None:
    index = subparsers.add_parser("index", help="build and query retrieval indexes of captioned images")
    commands = index.add_subparsers(dest="index_command", metavar="INDEX_COMMAND", required=True)
    build = commands.add_parser("build", help="index a folder of captioned images (only changes are embedded)")
    build.add_argument("folder")
    build.add_argument("--out", required=True)
    build.add_argument("--model", default="all-MiniLM-L6-v2")
    build.set_defaults(handler=build_command)
    query = commands.add_parser("query", help="the images whose captions best match a text")
    query.add_argument("index")
    query.add_argument("text")
    query.add_argument("--k", type=int, default=5)
    query.add_argument("--threshold", type=float, default=None)
    query.add_argument("--backend", choices=["exact", "faiss"], default="exact")
    query.add_argument("--json", action="store_true")
    query.set_defaults(handler=query_command)


def _run_node(node_type: str, output: str, observers: tuple[Any, ...] = (), **inputs: Any) -> Any:
    from sfumato import Engine, GraphBuilder

    builder = GraphBuilder("index")
    handle = builder.add(node_type, "node", **inputs)
    builder.output("out", handle[output])
    return Engine(device="cpu", cache=False, observers=observers).run(builder.build())["out"]


class ProgressBars:
    """Shows a node's progress events as bars on stderr (one bar per message: reading, embedding)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.tasks: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        from sfumato import NodeProgress

        if not isinstance(event, NodeProgress) or not event.total:
            return
        task = self.tasks.get(event.message)
        if task is None:
            task = self.tasks[event.message] = self.display.add_task(event.message or "working", total=event.total)
        self.display.update(task, completed=event.current, total=event.total)

    def __enter__(self) -> "ProgressBars":
        self.display.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.display.stop()


def build_command(args: argparse.Namespace) -> int:
    with ProgressBars() as bars:
        summary = _run_node("retrieve.build", "summary", observers=(bars,), folder=str(Path(args.folder).resolve()),
                            index=str(Path(args.out).resolve()), model=args.model)
    print(f"indexed {summary['items']} images into {summary['index']} "
          f"({summary['embedded']} embedded, the rest unchanged)")
    return 0


def query_command(args: argparse.Namespace) -> int:
    inputs: dict[str, Any] = {"index": str(Path(args.index).resolve()), "texts": [args.text], "k": args.k,
                              "backend": args.backend}
    if args.threshold is not None:
        inputs["threshold"] = args.threshold
    retrieved = _run_node("retrieve.query", "retrieved", **inputs)
    hits = [{"caption": h.caption, "path": h.path, "score": round(h.score, 6)} for h in retrieved.hits[0]]
    if args.json:
        print(json.dumps(hits, indent=2))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>2}. {hit['score']:.3f}  {hit['caption']}  ({hit['path']})")
    return 0
