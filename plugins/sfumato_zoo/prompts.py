"""Reading the wanted attributes back out of a prompt, for scoring free-form prompts."""

from __future__ import annotations

import re

from .dataset import BACKGROUNDS, COLOURS, SHAPES


def expected_attributes(prompt: str) -> dict[str, str]:
    """The shape, colour and background a prompt asks for (only those it names)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    found: dict[str, str] = {}
    shape_at = next((i for i, w in enumerate(words) if w in SHAPES), None)
    if shape_at is not None:
        found["shape"] = words[shape_at]
    colour_at = None
    if shape_at is not None and shape_at > 0 and words[shape_at - 1] in COLOURS:
        colour_at = shape_at - 1
    elif "coloured" in words and words.index("coloured") + 1 < len(words) and words[words.index("coloured") + 1] in COLOURS:
        colour_at = words.index("coloured") + 1
    if colour_at is not None:
        found["colour"] = words[colour_at]
    backgrounds = [i for i, w in enumerate(words) if w in BACKGROUNDS and i != colour_at]
    if backgrounds:
        found["background"] = words[backgrounds[-1]]
    return found
