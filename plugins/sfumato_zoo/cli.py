"""``sfumato zoo``: train, evaluate and picture the tiny models."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from . import MODELS, WEIGHTS


def add_parsers(subparsers: Any) -> None:
    zoo = subparsers.add_parser("zoo", help="train, evaluate and picture the tiny zoo models")
    commands = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)

    train = commands.add_parser("train", help="train a model (resumes from DIR/.train)")
    train.add_argument("kind", choices=["diffusion", "vae", "gan"])
    budget = train.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--steps", type=int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--pool", type=int, default=20000, help="rendered training images")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    train.set_defaults(handler=train_command)

    layouts = commands.add_parser("layouts", help="write (prompt, layout JSON) pairs from scenes, one JSON a line")
    layouts.add_argument("--out", required=True, type=Path)
    layouts.add_argument("--n", type=int, default=20000)
    layouts.add_argument("--seed", type=int, default=0)
    layouts.add_argument("--heldout", action="store_true", help="held-out wordings (for evaluation)")
    layouts.set_defaults(handler=layouts_command)

    evaluate = commands.add_parser("eval", help="prompt fidelity on held-out prompts")
    evaluate.add_argument("model", help="tiny-shapes-diffusion, tiny-shapes-vae, tiny-shapes-gan or a folder")
    evaluate.add_argument("--n", type=int, default=96)
    evaluate.add_argument("--steps", type=int, default=20)
    evaluate.add_argument("--scheduler", default="dpm++")
    evaluate.add_argument("--guidance", type=float, default=3.0)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--suite", choices=["attributes", "compositional"], default="attributes",
                          help="attributes: one shape per prompt; compositional: GenEval-style categories, "
                               "the plain graph against compose (needs the layout plugin)")
    evaluate.add_argument("--graphs", default="plain,compose", help="with --suite compositional: which graphs")
    evaluate.set_defaults(handler=eval_command)

    grid = commands.add_parser("grid", help="a picture of prompts x seeds for each model")
    grid.add_argument("--out", type=Path, default=Path("docs/zoo.png"))
    grid.add_argument("--seeds", type=int, default=4)
    grid.add_argument("--steps", type=int, default=20)
    grid.set_defaults(handler=grid_command)


def train_command(args: argparse.Namespace) -> int:
    import torch

    from sfumato import Engine, GraphBuilder

    from .training import Budget, train

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine(device="cpu")

    def encode(texts: list[str]) -> Any:
        builder = GraphBuilder("captions")
        node = builder.add("encode.sentence", texts=texts)
        builder.output("embedding", node["embedding"])
        return engine.run(builder.build())["embedding"].vectors

    command = "sfumato " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["zoo"] else ""
    record = train(args.kind, args.out, Budget(args.steps, args.minutes), args.seed, encode, pool=args.pool,
                   command=command)
    print(json.dumps(record, indent=2))
    return 0


class EvalProgress:
    """Live progress of ``zoo eval`` on stderr: the stage, and the sampler's steps over all images."""

    def __init__(self, model: str, n: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.model, self.n = model, n
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.task = self.progress.add_task(f"zoo eval {model}: loading models", total=None)
        self.runs = 0

    def __enter__(self) -> "EvalProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        from rich.markup import escape

        from sfumato import ModelLoaded, NodeProgress, NodeStarted, RunStarted

        if isinstance(event, RunStarted):
            self.runs += 1
            stage = "warming up" if self.runs == 1 else f"{self.n} images"
            self.progress.update(self.task, description=f"zoo eval {self.model}: {stage}", completed=0, total=None)
        elif isinstance(event, NodeStarted):
            self.progress.update(self.task, description=f"zoo eval {self.model}: {event.node_id}"
                                 + ("" if self.runs == 1 else f" ({self.n} images)"))
        elif isinstance(event, NodeProgress):
            self.progress.update(self.task, completed=event.current, total=event.total)
        elif isinstance(event, ModelLoaded):
            self.progress.console.print(f"[dim]model load: {escape(event.key)} in {event.seconds:.2f}s[/]")


def layouts_command(args: argparse.Namespace) -> int:
    """``zoo layouts``: the training pairs of a language-model layout planner (``sfumato layout train``)."""
    from sfumato import write_atomically

    from .dataset import layout_pairs

    lines = [json.dumps({"prompt": prompt, "layout": layout})
             for prompt, layout in layout_pairs(args.seed, args.n, heldout=args.heldout)]
    write_atomically(args.out, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print(f"{len(lines)} pairs -> {args.out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    if args.suite == "compositional":
        return compositional_command(args)
    with EvalProgress(args.model, args.n) as progress:
        scores = evaluate(args.model, n=args.n, steps=args.steps, scheduler=args.scheduler,
                          guidance=args.guidance, seed=args.seed, observers=[progress])
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        for key in ("colour", "shape", "background", "all"):
            print(f"{key:<12} {scores[key]:.3f}")
        print(f"{'s/image':<12} {scores['seconds_per_image']:.4f}")
    return 0


def compositional_command(args: argparse.Namespace) -> int:
    """``zoo eval --suite compositional``: a table of categories by graph, or JSON."""
    from sfumato import ParameterError

    from .dataset import CATEGORIES
    from .evaluation import evaluate_compositional

    graphs = tuple(name.strip() for name in args.graphs.split(",") if name.strip())
    if not graphs or set(graphs) - {"plain", "compose"}:
        raise ParameterError(f"--graphs: {args.graphs!r}; give plain, compose or both (comma-separated)")
    with EvalProgress(args.model, args.n) as progress:
        scores = evaluate_compositional(args.model, n=args.n, steps=args.steps, scheduler=args.scheduler,
                                        guidance=args.guidance, seed=args.seed, graphs=graphs, observers=[progress])
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    print(f"{'category':<16}" + "".join(f"{name:>10}" for name in graphs))
    for key in (*CATEGORIES, "overall", "seconds_per_image"):
        print(f"{key:<16}" + "".join(f"{scores[name][key]:>10.3f}" for name in graphs))
    if "compose" in graphs:
        print(f"{'planning s/img':<16}{scores['compose']['planning_seconds_per_image']:>10.5f}")
    return 0


GRID_PROMPTS = [
    "a red circle on a black background",
    "a blue square on a white background",
    "a yellow triangle on a gray background",
    "a green square on a black background",
    "a purple circle on a white background",
    "a white triangle on a gray background",
]


def grid_command(args: argparse.Namespace) -> int:
    from PIL import Image, ImageDraw, ImageFont

    from sfumato import Engine

    from .evaluation import generation_graph

    engine = Engine(device="cpu")
    available = [m for m in MODELS if (WEIGHTS / m).exists()]
    cell, label_width, header = 64, 300, 28
    sheet = Image.new("RGB", (label_width + len(available) * (args.seeds * cell + 16),
                              header + len(GRID_PROMPTS) * (cell + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for row, prompt in enumerate(GRID_PROMPTS):
        draw.text((6, header + row * (cell + 4) + cell // 2 - 7), prompt, fill="black", font=font)
    for column, model in enumerate(available):
        x0 = label_width + column * (args.seeds * cell + 16)
        draw.text((x0, 6), model, fill="black", font=font)
        images = engine.run(generation_graph(model, GRID_PROMPTS, steps=args.steps,
                                             batch_size=args.seeds))["images"].images
        for index, image in enumerate(images):
            row, seed = divmod(index, args.seeds)
            sheet.paste(image.resize((cell, cell), Image.Resampling.NEAREST),
                        (x0 + seed * cell, header + row * (cell + 4)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({', '.join(available)}; {args.seeds} seeds each)")
    return 0
