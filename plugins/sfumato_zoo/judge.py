"""A deterministic judge that reads the attributes of a shape picture.

The judge needs no training and no torch: the background is the median colour
of the image border, the object is every pixel far from that colour, its colour
is the nearest named colour to the object's median, and its shape follows from
how much of its bounding box it fills (square ~1.0, circle ~0.79, triangle
~0.5). That makes scores reproducible across machines and versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .dataset import ATTRIBUTES, BACKGROUNDS, CATEGORIES, COLOURS, Scene, ShapeSpec, relation_holds

_COLOUR_NAMES = list(COLOURS)
_COLOUR_RGB = np.array([COLOURS[name] for name in _COLOUR_NAMES], dtype=np.float32)
_BACKGROUND_NAMES = list(BACKGROUNDS)
_BACKGROUND_RGB = np.array([BACKGROUNDS[name] for name in _BACKGROUND_NAMES], dtype=np.float32)

#: Squared RGB distance from the background above which a pixel is "object".
_OBJECT_DISTANCE = 70.0


@dataclass(frozen=True)
class Verdict:
    """What the judge read from one image."""

    shape: str
    colour: str
    background: str
    fill_ratio: float

    def as_dict(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "background": self.background}

    def matches(self, spec: ShapeSpec) -> dict[str, bool]:
        """Per-attribute agreement with ``spec``, plus ``all``."""
        result = {name: getattr(self, name) == getattr(spec, name) for name in ATTRIBUTES}
        result["all"] = all(result.values())
        return result


def _nearest(pixel: np.ndarray, palette: np.ndarray, names: list[str]) -> str:
    distances = ((palette - pixel) ** 2).sum(axis=1)
    return names[int(distances.argmin())]


def judge_image(image: Image.Image) -> Verdict:
    """Read shape, colour and background from one image."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, _BACKGROUND_RGB, _BACKGROUND_NAMES)

    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=2))
    mask = distance > _OBJECT_DISTANCE
    if mask.sum() < 4:
        # Nothing stands out from the background: report the closest guesses.
        return Verdict(shape="none", colour="none", background=background, fill_ratio=0.0)

    # Keep the core of the object (pixels well away from the edge blend) for colour.
    core = distance > np.percentile(distance[mask], 50)
    colour = _nearest(np.median(pixels[core], axis=0), _COLOUR_RGB, _COLOUR_NAMES)

    # Half-way blended edge pixels count as half, which keeps the fill ratio
    # unbiased at small sizes.
    full = float(np.median(distance[core]))
    coverage = np.clip(distance / max(full, 1.0), 0.0, 1.0)
    coverage[~mask] = 0.0
    # Fractional extents: a column the shape only half covers counts as half.
    box_h = float(coverage.max(axis=1).sum())
    box_w = float(coverage.max(axis=0).sum())
    fill_ratio = float(coverage.sum() / max(box_h * box_w, 1.0))
    if fill_ratio > 0.86:
        shape = "square"
    elif fill_ratio > 0.63:
        shape = "circle"
    else:
        shape = "triangle"
    return Verdict(shape=shape, colour=colour, background=background, fill_ratio=fill_ratio)


def score_batch(images: list[Image.Image], specs: list[ShapeSpec]) -> dict[str, float]:
    """Per-attribute accuracy of ``images`` against the wanted ``specs``, plus ``all``."""
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} expected descriptions")
    totals = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    for image, spec in zip(images, specs):
        for name, ok in judge_image(image).matches(spec).items():
            totals[name] += int(ok)
    count = max(len(images), 1)
    return {name: value / count for name, value in totals.items()}


# --- Scenes: every object, and GenEval-style checks ---------------------------------------------------------------

#: Components smaller than this many pixels are noise, not objects.
_MIN_OBJECT_PIXELS = 8


@dataclass(frozen=True)
class Detection:
    """One object the judge found in a scene: shape, colour, centre (pixels) and size."""

    shape: str
    colour: str
    cx: float
    cy: float
    pixels: int
    fill_ratio: float

    def as_dict(self) -> dict[str, object]:
        return {"shape": self.shape, "colour": self.colour, "cx": round(self.cx, 2), "cy": round(self.cy, 2),
                "pixels": self.pixels}


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the 8-connected components of ``mask`` (a flood fill; images are small)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    height, width = mask.shape
    found: list[np.ndarray] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        label = len(found) + 1
        labels[y0, x0] = label
        stack = [(int(y0), int(x0))]
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        found.append(labels == label)
    return found


def _shape_of(fill_ratio: float) -> str:
    if fill_ratio > 0.86:
        return "square"
    if fill_ratio > 0.63:
        return "circle"
    return "triangle"


def find_objects(image: Image.Image) -> tuple[str, list[Detection]]:
    """The background colour name and every object in ``image``, largest first.

    An object is an 8-connected region of pixels far from the background (the
    median border colour); its colour, shape and centre are read as in
    :func:`judge_image`, per region.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, _BACKGROUND_RGB, _BACKGROUND_NAMES)
    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=2))
    detections = []
    for region in _components(distance > _OBJECT_DISTANCE):
        count = int(region.sum())
        if count < _MIN_OBJECT_PIXELS:
            continue
        core = region & (distance >= np.median(distance[region]))
        colour = _nearest(np.median(pixels[core], axis=0), _COLOUR_RGB, _COLOUR_NAMES)
        full = float(np.median(distance[core]))
        # Blended edge pixels count in proportion, as in judge_image (unbiased at small sizes).
        coverage = np.where(region, np.clip(distance / max(full, 1.0), 0.0, 1.0), 0.0)
        box_h = float(coverage.max(axis=1).sum())
        box_w = float(coverage.max(axis=0).sum())
        fill_ratio = float(coverage.sum() / max(box_h * box_w, 1.0))
        ys, xs = np.mgrid[0:region.shape[0], 0:region.shape[1]]
        weight = float(coverage.sum())
        # +0.5: the centre of a pixel, so centres compare with the scene's continuous coordinates.
        cx = float((coverage * xs).sum() / weight) + 0.5
        cy = float((coverage * ys).sum() / weight) + 0.5
        detections.append(Detection(_shape_of(fill_ratio), colour, cx, cy, count, fill_ratio))
    detections.sort(key=lambda d: -d.pixels)
    return background, detections


def scene_correct(detections: list[Detection], scene: Scene) -> bool:
    """Whether the detected objects satisfy what ``scene``'s caption asks for (GenEval-style rules).

    single_object / two_object: every named shape is present; colors / color_attr:
    an object of each named shape has its named colour; counting: exactly the
    named number of objects of that colour and shape; position: both objects are
    present and the first is in the named relation to the second.
    """
    def matching(shape: str, colour: str | None) -> list[Detection]:
        return [d for d in detections if d.shape == shape and (colour is None or d.colour == colour)]

    wanted = scene.objects
    if scene.category in ("single_object", "two_object"):
        return all(matching(o.shape, None) for o in wanted)
    if scene.category in ("colors", "color_attr"):
        return all(matching(o.shape, o.colour) for o in wanted)
    if scene.category == "counting":
        return len(matching(wanted[0].shape, wanted[0].colour)) == len(wanted)
    if scene.category == "position":
        assert scene.relation is not None
        return any(relation_holds((a.cx, a.cy), (b.cx, b.cy), scene.relation)
                   for a in matching(wanted[0].shape, wanted[0].colour)
                   for b in matching(wanted[1].shape, wanted[1].colour) if a is not b)
    raise ValueError(f"unknown category {scene.category!r}; choose one of {CATEGORIES}")


def score_scenes(images: list[Image.Image], scenes: list[Scene]) -> dict[str, float | int]:
    """Accuracy per GenEval-style category and ``overall`` (their mean, as GenEval reports it).

    Categories without any scene are left out; ``n`` is the number of images.
    """
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    hits: dict[str, list[int]] = {}
    for image, scene in zip(images, scenes):
        _, detections = find_objects(image)
        hits.setdefault(scene.category, []).append(int(scene_correct(detections, scene)))
    result: dict[str, float | int] = {c: sum(hits[c]) / len(hits[c]) for c in CATEGORIES if c in hits}
    result["overall"] = sum(result.values()) / max(len(result), 1)
    result["n"] = len(images)
    return result
