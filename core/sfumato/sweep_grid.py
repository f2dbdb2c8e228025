"""A labelled grid of a sweep's images over two of its axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sweep_runner import RunOutcome


def labelled_grid(outcomes: list[RunOutcome], x_axis: str, y_axis: str, path: Path, cell: int = 128) -> Path:
    """Compose the first image of each run into a grid: columns by ``x_axis``, rows by ``y_axis``."""
    from PIL import Image, ImageDraw, ImageFont

    def value(outcome: RunOutcome, axis: str) -> str:
        if axis not in outcome.params:
            raise ValueError(f"--grid axis {axis!r} is not a parameter of this sweep")
        return str(outcome.params[axis])

    xs = list(dict.fromkeys(value(o, x_axis) for o in outcomes))
    ys = list(dict.fromkeys(value(o, y_axis) for o in outcomes))
    try:
        font: Any = ImageFont.load_default(size=max(10, cell // 10))
    except TypeError:
        font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_labels = [f"{y_axis}={y}"[:80] for y in ys]
    margin_left = int(max(measure.textlength(label, font=font) for label in row_labels)) + 16
    margin_top = cell // 4 + 8
    sheet = Image.new("RGB", (margin_left + len(xs) * cell, margin_top + len(ys) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for column, x in enumerate(xs):
        draw.text((margin_left + column * cell + 4, 4), f"{x_axis}={x}"[:24], fill="black", font=font)
    for row, label in enumerate(row_labels):
        draw.text((6, margin_top + row * cell + cell // 2 - 6), label, fill="black", font=font)
    for outcome in outcomes:
        pngs = [f for f in outcome.files if f.lower().endswith(".png")]
        if outcome.status != "ok" or not pngs:
            continue
        with Image.open(pngs[0]) as image:
            tile = image.convert("RGB")
            tile.thumbnail((cell, cell), Image.Resampling.NEAREST if tile.width < cell else Image.Resampling.LANCZOS)
            column, row = xs.index(value(outcome, x_axis)), ys.index(value(outcome, y_axis))
            sheet.paste(tile.resize((cell, cell), Image.Resampling.NEAREST),
                        (margin_left + column * cell, margin_top + row * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
