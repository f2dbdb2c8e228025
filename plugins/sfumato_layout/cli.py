"""``sfumato layout``: train the language-model layout planner."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any


def add_parsers(subparsers: Any) -> None:
    layout = subparsers.add_parser("layout", help="layout planning: train the language-model planner")
    commands = layout.add_subparsers(dest="layout_command", metavar="LAYOUT_COMMAND", required=True)
    train = commands.add_parser("train", help="train a small causal LM on (prompt, layout) pairs; resumes from "
                                              "OUT/checkpoint")
    train.add_argument("--pairs", required=True, type=Path, help="JSON lines of {prompt, layout} (zoo layouts)")
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--save-every", type=int, default=200)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--width", type=int, default=64, help="model width (a multiple of --heads)")
    train.add_argument("--layers", type=int, default=4)
    train.add_argument("--heads", type=int, default=4)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    train.set_defaults(handler=train_command)


def train_command(args: argparse.Namespace) -> int:
    from sfumato import ParameterError

    from .training import TrainingConfig, train

    if not args.pairs.is_file():
        raise ParameterError(f"--pairs: no file {args.pairs}")
    if min(args.steps, args.batch_size, args.save_every, args.width, args.layers, args.heads) < 1:
        raise ParameterError("--steps, --batch-size, --save-every, --width, --layers and --heads must be at least 1")
    if args.width % args.heads:
        raise ParameterError(f"--width: {args.width} is not a multiple of --heads {args.heads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def log(step: int, loss: float) -> None:
        if step == 1 or step % 20 == 0:
            print(f"step {step} loss {loss:.4f}", flush=True)

    command = _command_line(args)
    config = TrainingConfig(args.pairs, args.out, steps=args.steps, batch_size=args.batch_size,
                            save_every=args.save_every, seed=args.seed, width=args.width, layers=args.layers,
                            heads=args.heads, learning_rate=args.learning_rate, notes=(("command", command),))
    try:
        folder = train(config, log)
    except ValueError as error:
        raise ParameterError(f"--pairs: {error}") from None
    print(f"model -> {folder}")
    return 0


#: ``layout train`` options after the required ones, with their defaults (a default is left out of the record).
_OPTIONS = (("steps", 3000), ("batch_size", 32), ("save_every", 200), ("seed", 0), ("width", 64), ("layers", 4),
            ("heads", 4), ("learning_rate", 1e-3), ("threads", 0))


def _command_line(args: argparse.Namespace) -> str:
    """The command that makes this training, for its ``training.json`` (``--steps`` always; other defaults not)."""
    words = ["sfumato", "layout", "train", "--pairs", str(args.pairs), "--out", str(args.out)]
    for name, default in _OPTIONS:
        value = getattr(args, name)
        if name == "steps" or value != default:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(word) for word in words)
