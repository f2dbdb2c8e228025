"""Measuring prompt fidelity: generate for held-out prompts and score with the judge."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from sfumato import Engine, GraphBuilder, ImageBatch, RunEvent

from .dataset import ATTRIBUTES, ShapeSpec, evaluation_prompts
from .judge import judge_image


def generation_graph(model: str, prompts: list[str], *, steps: int = 20, scheduler: str = "dpm++",
                     guidance: float = 3.0, seed: int = 0, batch_size: int = 1) -> Any:
    """prompts -> encode.text -> generate.image, as a graph."""
    builder = GraphBuilder("zoo-eval")
    encode = builder.add("encode.text", "encode", texts=prompts)
    generate = builder.add("generate.image", "generate", conditioning=encode["conditioning"], model=model,
                           steps=steps, scheduler=scheduler, guidance=guidance, seed=seed, batch_size=batch_size)
    builder.output("images", generate["images"])
    return builder.build()


def score_against(images: ImageBatch, specs: list[ShapeSpec]) -> dict[str, float]:
    totals = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    for image, spec in zip(images.images, specs):
        for name, ok in judge_image(image).matches(spec).items():
            totals[name] += int(ok)
    return {name: value / max(len(specs), 1) for name, value in totals.items()}


def evaluate(model: str, *, n: int = 96, steps: int = 20, scheduler: str = "dpm++", guidance: float = 3.0,
             seed: int = 0, engine: Engine | None = None,
             observers: Iterable[Callable[[RunEvent], None]] = ()) -> dict[str, Any]:
    """Per-attribute accuracy, ``all`` and seconds per image on ``n`` held-out prompts.

    ``observers`` receive the run events (model loads, nodes, sampler steps) of
    both runs, the warm-up and the measured one, to show progress.
    """
    engine = engine or Engine(device="cpu", cache=False)
    engine.observers.extend(observers)
    pairs = evaluation_prompts(n)
    prompts, specs = [p for p, _ in pairs], [s for _, s in pairs]
    # Warm up: load the encoder and the model, so the timing measures generation.
    engine.run(generation_graph(model, prompts[:1], steps=1, scheduler=scheduler, guidance=guidance))
    started = time.perf_counter()
    result = engine.run(generation_graph(model, prompts, steps=steps, scheduler=scheduler,
                                         guidance=guidance, seed=seed))
    elapsed = time.perf_counter() - started
    scores: dict[str, Any] = score_against(result["images"], specs)
    scores["seconds_per_image"] = elapsed / n
    scores.update({"model": model, "n": n, "steps": steps, "scheduler": scheduler, "guidance": guidance})
    return scores
