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

from .dataset import ATTRIBUTES, BACKGROUNDS, COLOURS, ShapeSpec

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
