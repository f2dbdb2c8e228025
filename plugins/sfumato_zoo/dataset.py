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


# --- Scenes: several objects, with counts, positions and attribute binding -------------------------------------

#: GenEval-style categories of a compositional prompt.
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

#: Number words used in captions (1-4 objects).
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}

#: Spatial relations: ``first <relation> second`` holds when the centres satisfy it.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

#: Scene caption templates seen in training, per category. ``{a}``/``{b}`` are noun phrases.
SCENE_TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "single_object": ("a {a} on a {background} background", "a picture of a {a} against {background}"),
    "colors": ("a {a} on a {background} background", "{background} background with a {a}"),
    "two_object": ("a {a} and a {b} on a {background} background", "a picture of a {a} and a {b} against {background}"),
    "color_attr": ("a {a} and a {b} on a {background} background", "{background} background with a {a} and a {b}"),
    "counting": ("{count} {a} on a {background} background", "a picture of {count} {a} against {background}"),
    "position": ("a {a} {relation} a {b} on a {background} background",
                 "a picture of a {a} {relation} a {b} against {background}"),
}

#: Scene caption templates held out of training and used only for evaluation.
SCENE_HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "single_object": ("there is a {a} and the background is {background}",),
    "colors": ("a {a} drawn on {background}",),
    "two_object": ("a {a} next to a {b}, drawn on {background}",),
    "color_attr": ("there is a {a} and a {b} and the background is {background}",),
    "counting": ("exactly {count} {a} drawn on {background}",),
    "position": ("there is a {a} {relation} a {b} and the background is {background}",),
}

#: How each relation is worded in captions ("left of" reads "to the left of").
RELATION_WORDS: dict[str, str] = {"left of": "to the left of", "right of": "to the right of",
                                  "above": "above", "below": "below"}


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: its shape, colour, centre and half extent, in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    half: float


@dataclass(frozen=True)
class Scene:
    """A compositional picture and what its caption asks for.

    ``objects`` are what is drawn. ``category`` says which GenEval-style check
    the caption exercises; ``relation`` (with ``objects[0]`` and ``objects[1]``)
    is set for ``position`` scenes. ``named_colours`` is false when the caption
    names shapes only (``single_object``, ``two_object``, ``counting``).
    """

    objects: tuple[SceneObject, ...]
    background: str
    category: str
    size: int = 64
    relation: str | None = None

    @property
    def named_colours(self) -> bool:
        return self.category in ("colors", "color_attr", "position")

    def phrase(self, obj: SceneObject, plural: bool = False) -> str:
        noun = obj.shape + ("s" if plural else "")
        return f"{obj.colour} {noun}" if self.named_colours or self.category == "counting" else noun

    def caption(self, template: str) -> str:
        """Fill a scene caption template."""
        first = self.objects[0]
        second = self.objects[1] if len(self.objects) > 1 else first
        return template.format(
            a=self.phrase(first, plural=self.category == "counting"), b=self.phrase(second),
            count=NUMBER_WORDS[len(self.objects)], background=self.background,
            relation=RELATION_WORDS.get(self.relation or "", ""),
        )

    def as_dict(self) -> dict[str, object]:
        return {"background": self.background, "category": self.category, "relation": self.relation,
                "objects": [{"shape": o.shape, "colour": o.colour, "cx": o.cx, "cy": o.cy, "half": o.half}
                            for o in self.objects]}


def relation_holds(first: tuple[float, float], second: tuple[float, float], relation: str,
                   margin: float = 0.0) -> bool:
    """Whether centre ``first`` is ``relation`` centre ``second`` (image y grows downwards)."""
    (x1, y1), (x2, y2) = first, second
    return {"left of": x1 + margin < x2, "right of": x1 > x2 + margin,
            "above": y1 + margin < y2, "below": y1 > y2 + margin}[relation]


def _visible_colours(background: str) -> list[str]:
    return [name for name, rgb in COLOURS.items() if rgb != BACKGROUNDS[background]]


def _place(rng: random.Random, count: int, size: int, relation: str | None) -> list[tuple[float, float, float]]:
    """Non-overlapping (cx, cy, half) for ``count`` objects; the first two satisfy ``relation``."""
    margin = 2.0
    for _ in range(1000):
        placed: list[tuple[float, float, float]] = []
        for _ in range(count):
            half = rng.uniform(0.10, 0.16) * size
            lo, hi = half + margin, size - half - margin
            placed.append((rng.uniform(lo, hi), rng.uniform(lo, hi), half))
        apart = all(
            max(abs(a[0] - b[0]), abs(a[1] - b[1])) > a[2] + b[2] + 2 * margin
            for i, a in enumerate(placed) for b in placed[i + 1:]
        )
        if apart and (relation is None or relation_holds(placed[0][:2], placed[1][:2], relation, margin=size * 0.15)):
            return placed
    raise RuntimeError("could not place the objects")  # pragma: no cover - the ranges leave ample room


def random_scene(rng: random.Random, category: str, size: int = 64) -> Scene:
    """A random scene exercising ``category``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of {CATEGORIES}")
    background = rng.choice(list(BACKGROUNDS))
    colours = _visible_colours(background)
    relation = rng.choice(RELATIONS) if category == "position" else None
    if category in ("single_object", "colors"):
        kinds = [(rng.choice(SHAPES), rng.choice(colours))]
    elif category == "counting":
        kinds = [(rng.choice(SHAPES), rng.choice(colours))] * rng.randint(2, 4)
    else:
        shapes = rng.sample(SHAPES, 2)
        kinds = [(shapes[0], rng.choice(colours)), (shapes[1], rng.choice(colours))]
    places = _place(rng, len(kinds), size, relation)
    objects = tuple(SceneObject(shape, colour, cx, cy, half) for (shape, colour), (cx, cy, half) in zip(kinds, places))
    return Scene(objects, background, category, size, relation)


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: float, fill: tuple[int, int, int]) -> None:
    """Draw one object on a canvas ``scale`` times the scene's size."""
    cx, cy, half = obj.cx * scale, obj.cy * scale, obj.half * scale
    if obj.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif obj.shape == "triangle":
        # An isosceles triangle as wide as it is tall keeps inside its box (and fills half of it).
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; choose one of {SHAPES}")


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene (at 4x, downsampled, for smooth edges)."""
    scale = 4
    image = Image.new("RGB", (scene.size * scale,) * 2, BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_object(draw, obj, scale, COLOURS[obj.colour])
    return image.resize((scene.size, scene.size), Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class SceneSample:
    """One captioned scene image."""

    image: Image.Image
    caption: str
    scene: Scene


def iter_scenes(seed: int, count: int, *, size: int = 64, heldout: bool = False) -> Iterator[SceneSample]:
    """Yield ``count`` captioned scenes, the same for the same seed, categories in turn.

    ``heldout=True`` draws captions from the held-out templates only.
    """
    rng = random.Random(seed)
    templates = SCENE_HELDOUT_TEMPLATES if heldout else SCENE_TRAIN_TEMPLATES
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        scene = random_scene(rng, category, size)
        yield SceneSample(render_scene(scene), scene.caption(rng.choice(templates[category])), scene)


def compositional_prompts(count: int = 60, seed: int = 1234) -> list[tuple[str, Scene]]:
    """A fixed list of held-out compositional prompts, the categories evenly."""
    return [(sample.caption, sample.scene) for sample in iter_scenes(seed, count, heldout=True)]


def scene_layout(scene: Scene) -> dict[str, object]:
    """The layout a planner should write for a scene's caption: background, each object's caption and box.

    The layout JSON format of the ``layout`` plugin (boxes in canvas fractions);
    a caption names the colour only where the scene's caption does.
    """
    def box(obj: SceneObject) -> list[float]:
        return [round(max(0.0, (obj.cx - obj.half) / scene.size), 2), round(max(0.0, (obj.cy - obj.half) / scene.size), 2),
                round(min(1.0, (obj.cx + obj.half) / scene.size), 2), round(min(1.0, (obj.cy + obj.half) / scene.size), 2)]

    return {"background": scene.background,
            "objects": [{"caption": scene.phrase(obj), "box": box(obj)} for obj in scene.objects]}


def layout_pairs(seed: int, count: int, *, heldout: bool = False) -> Iterator[tuple[str, dict[str, object]]]:
    """``count`` (caption, layout) pairs from scenes: what a language-model planner learns from."""
    for sample in iter_scenes(seed, count, heldout=heldout):
        yield sample.caption, scene_layout(sample.scene)
