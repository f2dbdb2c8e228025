"""Zoo nodes: the prompt-fidelity judge, and the procedural renderer."""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

from sfumato import Field, ImageBatch, node

from .dataset import ATTRIBUTES, BACKGROUNDS, COLOURS, ShapeSpec, render
from .judge import judge_image
from .prompts import expected_attributes


@node("zoo.score", category="analysis", output="scores")
def score(images: ImageBatch, prompts: list[str]) -> dict:
    """Score how well images match their prompts, by the zoo's deterministic judge.

    The judge reads shape, colour and background from each image and compares
    them with the attributes the prompt names. One prompt may serve a whole
    batch; otherwise there is one prompt per image. Returns per-attribute
    accuracy, ``all`` (every named attribute right) and ``count``.

    Args:
        images: generated images.
        prompts: the prompt of each image (or one for all).
    """
    if len(prompts) not in (1, len(images)):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images; give 1 or {len(images)}")
    totals = {name: [0, 0] for name in (*ATTRIBUTES, "all")}
    for index, image in enumerate(images.images):
        wanted = expected_attributes(prompts[0] if len(prompts) == 1 else prompts[index])
        verdict = judge_image(image).as_dict()
        right = [verdict[name] == value for name, value in wanted.items()]
        for name, value in wanted.items():
            totals[name][0] += int(verdict[name] == value)
            totals[name][1] += 1
        totals["all"][0] += int(all(right) and bool(right))
        totals["all"][1] += 1
    result: dict[str, Any] = {name: (hits / count if count else None) for name, (hits, count) in totals.items()}
    result["count"] = len(images)
    return result


@node("zoo.judge", category="analysis", output="verdicts")
def judge(images: ImageBatch) -> dict:
    """Read shape, colour and background of each image (``{"images": [...]}``)."""
    return {"images": [judge_image(image).as_dict() for image in images.images]}


@node("zoo.render", category="generate", output="images")
def render_shapes(
    shape: Literal["circle", "square", "triangle"] = "circle",
    colour: Literal["red", "green", "blue", "yellow", "purple", "white"] = "red",
    background: Literal["black", "white", "gray"] = "black",
    count: Annotated[int, Field(ge=1, le=256)] = 1,
    seed: int = 0,
    size: Annotated[int, Field(ge=16, le=256)] = 32,
) -> ImageBatch:
    """Draw pictures of the zoo dataset procedurally (the ground truth the models learn).

    Args:
        shape: the shape.
        colour: the shape's colour.
        background: the background.
        count: how many (size and position vary with the seed).
        seed: the jitter seed.
        size: image size in pixels.
    """
    if COLOURS[colour] == BACKGROUNDS[background]:
        raise ValueError(f"a {colour} shape on a {background} background would be invisible")
    rng = random.Random(seed)
    spec = ShapeSpec(shape, colour, background)
    caption = spec.caption("a {colour} {shape} on a {background} background")
    return ImageBatch(tuple(render(spec, rng, size) for _ in range(count)), (caption,) * count)

