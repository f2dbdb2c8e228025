"""A deterministic procedural dataset of captioned shape images.

Each image holds one shape (circle, square or triangle) in one named colour on
one named background, with random size and position jitter. Captions come from
several templates; some templates are held out of training so that evaluation
measures understanding of new wording rather than memorised strings.

Everything here is pure Pillow + NumPy so that the judge and the dataset can be
used without torch.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Object colours and their RGB values.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 40),
    "purple": (150, 55, 190),
    "white": (245, 245, 245),
}

#: Background colours and their RGB values.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}

#: Caption templates seen in training.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} on a {background} background",
    "{colour} {shape}, {background} background",
    "a picture of a {colour} {shape} against {background}",
    "a {shape} coloured {colour} on {background}",
    "the {colour} {shape} sits on a {background} backdrop",
    "{background} background with a {colour} {shape}",
    "an image showing a {colour} {shape} over a {background} field",
    "a simple drawing: {colour} {shape}, {background} canvas",
)

#: Caption templates held out of training and used only for evaluation.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} in front of a {background} background",
    "{colour} {shape} drawn on {background}",
    "there is a {colour} {shape} and the background is {background}",
)

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "background")


@dataclass(frozen=True)
class ShapeSpec:
    """The attributes of one picture."""

    shape: str
    colour: str
    background: str

    def caption(self, template: str) -> str:
        """Fill a caption template with these attributes."""
        return template.format(shape=self.shape, colour=self.colour, background=self.background)

    def as_dict(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "background": self.background}


def all_specs() -> list[ShapeSpec]:
    """Every valid attribute combination (an object never matches its background)."""
    return [
        ShapeSpec(shape, colour, background)
        for shape, colour, background in itertools.product(SHAPES, COLOURS, BACKGROUNDS)
        if COLOURS[colour] != BACKGROUNDS[background]
    ]


def render(spec: ShapeSpec, rng: random.Random, size: int = 32) -> Image.Image:
    """Draw one image of ``spec`` with size and position jitter taken from ``rng``.

    The shape is drawn at 4x resolution and downsampled, so edges are smooth. A
    margin is always kept so that the image border shows only background.
    """
    scale = 4
    big = size * scale
    image = Image.new("RGB", (big, big), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(image)
    half = rng.uniform(0.22, 0.34) * size  # half of the shape's extent
    margin = 2.5
    max_offset = size / 2 - half - margin
    cx = size / 2 + rng.uniform(-max_offset, max_offset)
    cy = size / 2 + rng.uniform(-max_offset, max_offset)
    colour = COLOURS[spec.colour]
    box = [(cx - half) * scale, (cy - half) * scale, (cx + half) * scale, (cy + half) * scale]
    if spec.shape == "circle":
        draw.ellipse(box, fill=colour)
    elif spec.shape == "square":
        draw.rectangle(box, fill=colour)
    elif spec.shape == "triangle":
        height = 2 * half
        side = height / (3**0.5 / 2)
        top = (cx * scale, (cy - half) * scale)
        left = ((cx - side / 2) * scale, (cy + half) * scale)
        right = ((cx + side / 2) * scale, (cy + half) * scale)
        # An equilateral triangle is wider than it is tall; keep it inside the margin.
        if side / 2 > size / 2 - margin:
            raise ValueError("triangle too wide")  # pragma: no cover - bounded by the jitter ranges
        draw.polygon([top, left, right], fill=colour)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}; choose one of {SHAPES}")
    return image.resize((size, size), Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class Sample:
    """One captioned image of the dataset."""

    image: Image.Image
    caption: str
    spec: ShapeSpec


def iter_samples(
    seed: int, count: int, *, size: int = 32, heldout: bool = False
) -> Iterator[Sample]:
    """Yield ``count`` samples, the same ones for the same seed.

    ``heldout=True`` draws captions from the held-out templates only.
    """
    rng = random.Random(seed)
    specs = all_specs()
    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    for _ in range(count):
        spec = rng.choice(specs)
        template = rng.choice(templates)
        yield Sample(render(spec, rng, size), spec.caption(template), spec)


def evaluation_prompts(count: int = 96) -> list[tuple[str, ShapeSpec]]:
    """A fixed list of held-out prompts covering the attribute combinations evenly."""
    specs = all_specs()
    prompts: list[tuple[str, ShapeSpec]] = []
    for index in range(count):
        spec = specs[index % len(specs)]
        template = HELDOUT_TEMPLATES[(index // len(specs) + index) % len(HELDOUT_TEMPLATES)]
        prompts.append((spec.caption(template), spec))
    return prompts


def images_to_array(images: list[Image.Image]) -> np.ndarray:
    """Stack PIL images into an ``(N, H, W, 3)`` uint8 array."""
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
