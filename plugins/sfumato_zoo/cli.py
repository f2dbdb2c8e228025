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

    distill = commands.add_parser("distill", help="distil tiny-shapes-diffusion into a 1-2 step latent consistency "
                                  "model (resumes from DIR/.train)")
    budget = distill.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--steps", type=int)
    distill.add_argument("--out", required=True, type=Path)
    distill.add_argument("--teacher", default="tiny-shapes-diffusion", help="a zoo diffusion model name or folder")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--pool", type=int, default=20000, help="rendered training images")
    distill.add_argument("--batch", type=int, default=64)
    distill.add_argument("--guidance", type=float, default=3.0, help="the teacher's guidance, baked into the student")
    distill.add_argument("--lr", type=float, default=1e-4)
    distill.add_argument("--export", choices=["target", "student", "average"], default="target",
                         help="which network becomes the model: the EMA target, the student, or its slow average")
    distill.add_argument("--half", action="store_true", help="store the UNet weights as float16")
    distill.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    distill.set_defaults(handler=distill_command)

    layouts = commands.add_parser("layouts", help="write (prompt, layout JSON) pairs from scenes, one JSON a line")
    layouts.add_argument("--out", required=True, type=Path)
    layouts.add_argument("--n", type=int, default=20000)
    layouts.add_argument("--seed", type=int, default=0)
    layouts.add_argument("--heldout", action="store_true", help="held-out wordings (for evaluation)")
    layouts.set_defaults(handler=layouts_command)

    evaluate = commands.add_parser("eval", help="prompt fidelity on held-out prompts")
    evaluate.add_argument("model", help="tiny-shapes-diffusion, tiny-shapes-vae, tiny-shapes-gan or a folder")
    evaluate.add_argument("--n", type=int, default=96)
    evaluate.add_argument("--steps", type=int, help="default: the model's own (sfumato.json 'defaults'), else 20")
    evaluate.add_argument("--scheduler", help="default: the model's own, else dpm++")
    evaluate.add_argument("--guidance", type=float, help="default: the model's own, else 3")
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
    grid.add_argument("--steps", type=int, help="default: each model's own (sfumato.json 'defaults'), else 20")
    grid.set_defaults(handler=grid_command)


def _sentence_encoder() -> Any:
    """texts -> (N, 384) MiniLM embeddings, through the ``encode.sentence`` node (as the models were trained)."""
    from sfumato import Engine, GraphBuilder

    engine = Engine(device="cpu")

    def encode(texts: list[str]) -> Any:
        builder = GraphBuilder("captions")
        node = builder.add("encode.sentence", texts=texts)
        builder.output("embedding", node["embedding"])
        return engine.run(builder.build())["embedding"].vectors

    return encode


def _command_line() -> str:
    return "sfumato " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["zoo"] else ""


def train_command(args: argparse.Namespace) -> int:
    import torch

    from .training import Budget, train

    if args.threads:
        torch.set_num_threads(args.threads)
    record = train(args.kind, args.out, Budget(args.steps, args.minutes), args.seed, _sentence_encoder(),
                   pool=args.pool, command=_command_line())
    print(json.dumps(record, indent=2))
    return 0


def model_folder(model: str) -> Path:
    """A zoo model name's shipped folder, or ``model`` as a path."""
    return WEIGHTS / model if model in MODELS else Path(model)


def distill_command(args: argparse.Namespace) -> int:
    """``zoo distill``: latent consistency distillation of a zoo diffusion model (see ``distill.py``)."""
    import torch

    from sfumato import ParameterError

    from .distill import distill
    from .training import Budget

    teacher = model_folder(args.teacher)
    if not (teacher / "unet").is_dir():
        raise ParameterError(f"--teacher: {args.teacher!r} is not a zoo diffusion model (no unet/ in {teacher})")
    if args.steps is not None and args.steps < 1 or args.minutes is not None and args.minutes <= 0:
        raise ParameterError("--steps/--minutes: give a positive budget")
    if args.threads:
        torch.set_num_threads(args.threads)
    record = distill(teacher, args.out, Budget(args.steps, args.minutes), args.seed, _sentence_encoder(),
                     pool=args.pool, batch=args.batch, guidance=args.guidance, learning_rate=args.lr,
                     export=args.export, half=args.half, command=_command_line(),
                     teacher_name=args.teacher if args.teacher in MODELS else str(teacher))
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


def _apply_model_defaults(args: argparse.Namespace) -> None:
    """Fill ``--steps/--scheduler/--guidance`` left unset from the model's ``sfumato.json`` defaults."""
    from .distill import sampling_defaults

    own = sampling_defaults(model_folder(args.model))
    for name, fallback in (("steps", 20), ("scheduler", "dpm++"), ("guidance", 3.0)):
        if getattr(args, name) is None:
            setattr(args, name, own.get(name, fallback))


def eval_command(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    _apply_model_defaults(args)
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

    from .distill import sampling_defaults
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
        own = sampling_defaults(WEIGHTS / model)  # a distilled model samples with its own scheduler and steps
        images = engine.run(generation_graph(model, GRID_PROMPTS, steps=args.steps or own.get("steps", 20),
                                             scheduler=own.get("scheduler", "dpm++"),
                                             guidance=own.get("guidance", 3.0), batch_size=args.seeds))["images"].images
        for index, image in enumerate(images):
            row, seed = divmod(index, args.seeds)
            sheet.paste(image.resize((cell, cell), Image.Resampling.NEAREST),
                        (x0 + seed * cell, header + row * (cell + 4)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({', '.join(available)}; {args.seeds} seeds each)")
    return 0
