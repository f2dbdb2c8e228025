"""A labelled grid of a sweep's images over two of its axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..plugin.limits import current_limits
from .report import RunOutcome
from .sweeps import SweepAxis

#: The side of one grid cell, in pixels.
CELL = 128


def grid_axes(grid: str, axes: list[SweepAxis], cell: int = CELL) -> tuple[str, str]:
    """Check ``--grid X,Y`` against the sweep's axes before anything runs; return ``(X, Y)``.

    Both must be swept, and differ; the grid they make must fit the image
    limits. Raises :class:`ParameterError` naming the axes that were swept.
    """
    x_axis, _, y_axis = (part.strip() for part in grid.partition(","))
    if not x_axis or not y_axis:
        raise ParameterError(f"--grid expects two sweep axes: X,Y (got {grid!r:.60})")
    lengths = {axis.name: len(axis.values) for axis in axes}
    swept = ", ".join(lengths) or "none"
    for name in (x_axis, y_axis):
        if name not in lengths:
            raise ParameterError(f"--grid axis {name!r:.60} was not swept (swept: {swept}); "
                                 f"add --sweep {name}=... or pick two of the swept axes")
    if x_axis == y_axis:
        raise ParameterError(f"--grid needs two different axes, got {x_axis!r} twice")
    width, height = (lengths[x_axis] + 2) * cell, (lengths[y_axis] + 1) * cell
    if width * height > current_limits().max_image_pixels:
        raise ParameterError(f"--grid {x_axis},{y_axis}: a {lengths[x_axis]} x {lengths[y_axis]} grid of "
                             f"{cell}-pixel cells is larger than the image limit "
                             f"({current_limits().max_image_pixels:,} pixels, Limits.max_image_pixels)")
    return x_axis, y_axis


def labelled_grid(outcomes: list[RunOutcome], x_axis: str, y_axis: str, path: Path, cell: int = CELL) -> Path:
    """Compose the first image of each run into a grid: columns by ``x_axis``, rows by ``y_axis``."""
    from PIL import Image, ImageDraw, ImageFont

    def value(outcome: RunOutcome, axis: str) -> str:
        if axis not in outcome.params:
            raise ParameterError(f"--grid axis {axis!r} is not a parameter of this sweep")
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
