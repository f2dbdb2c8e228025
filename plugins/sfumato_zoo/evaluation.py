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


# --- The compositional suite: plain text-to-image against the compose graph ---------------------------------------

def compose_graph(model: str, prompt: str, *, steps: int = 20, scheduler: str = "dpm++", guidance: float = 3.0,
                  seed: int = 0, size: int = 64, batch_size: int = 1) -> Any:
    """prompt -> layout.plan -> layout.prompts -> encode.text -> layout.generate, as a graph.

    These are the nodes of the shipped ``compose`` graph that make an image (it adds upscaling and saving).

    The zoo names the layout nodes by id only (plugins never import each other):
    this graph needs the ``layout`` plugin installed.
    """
    builder = GraphBuilder("zoo-eval-compose")
    plan = builder.add("layout.plan", "plan", prompt=prompt)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encode = builder.add("encode.text", "encode", texts=prompts["texts"])
    generate = builder.add("layout.generate", "generate", layout=plan["layout"], conditioning=encode["conditioning"],
                           model=model, steps=steps, scheduler=scheduler, guidance=guidance, seed=seed,
                           width=size, height=size, batch_size=batch_size)
    builder.output("images", generate["images"])
    return builder.build()


def evaluate_compositional(model: str = "tiny-shapes-diffusion", *, n: int = 60, steps: int = 20,
                           scheduler: str = "dpm++", guidance: float = 3.0, seed: int = 0,
                           graphs: tuple[str, ...] = ("plain", "compose"), engine: Engine | None = None,
                           observers: Iterable[Callable[[RunEvent], None]] = ()) -> dict[str, Any]:
    """GenEval-style scores per category for each graph on ``n`` held-out compositional prompts.

    ``plain`` is encode.text -> generate.image at the model's own size; ``compose``
    plans a layout and generates region by region at 64x64. Returns, per graph,
    the categories, ``overall``, ``seconds_per_image`` (after a warm-up) and, for
    ``compose``, ``planning_seconds_per_image`` (the ``layout.plan`` node's time in the run report).
    """
    from .dataset import compositional_prompts
    from .judge import score_scenes

    unknown = set(graphs) - {"plain", "compose"}
    if unknown:
        raise ValueError(f"graphs: unknown {sorted(unknown)}; choose from plain, compose")
    engine = engine or Engine(device="cpu", cache=False)
    engine.observers.extend(observers)
    pairs = compositional_prompts(n)
    prompts, scenes = [p for p, _ in pairs], [s for _, s in pairs]
    results: dict[str, Any] = {"model": model, "n": n, "steps": steps, "scheduler": scheduler, "guidance": guidance}
    if "plain" in graphs:
        engine.run(generation_graph(model, prompts[:1], steps=1, scheduler=scheduler, guidance=guidance))
        started = time.perf_counter()
        result = engine.run(generation_graph(model, prompts, steps=steps, scheduler=scheduler, guidance=guidance,
                                             seed=seed))
        scores: dict[str, Any] = score_scenes(list(result["images"].images), scenes)
        scores["seconds_per_image"] = (time.perf_counter() - started) / n
        results["plain"] = scores
    if "compose" in graphs:
        engine.run(compose_graph(model, prompts[0], steps=1, scheduler=scheduler, guidance=guidance))
        images, planning = [], 0.0
        started = time.perf_counter()
        for index, prompt in enumerate(prompts):
            run = engine.run(compose_graph(model, prompt, steps=steps, scheduler=scheduler, guidance=guidance,
                                           seed=seed + index))
            images.append(run["images"].images[0])
            planning += run.report.nodes["plan"].seconds
        elapsed = time.perf_counter() - started
        scores = score_scenes(images, scenes)
        scores["seconds_per_image"] = elapsed / n
        scores["planning_seconds_per_image"] = planning / n
        results["compose"] = scores
    return results

