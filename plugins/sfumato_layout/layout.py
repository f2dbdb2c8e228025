"""The ``Layout`` value: what a picture holds and where, planned from a prompt.

A layout is a background and a list of objects, each with a caption (``red
circle``) and a box in fractions of the canvas (``x0, y0, x1, y1`` in 0..1,
y growing downwards), so the same layout serves any image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Colour names the planner and ``layout.draw`` know, with the RGB they are drawn in.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 230), "yellow": (240, 215, 40),
    "purple": (150, 55, 190), "white": (245, 245, 245), "black": (12, 12, 12), "gray": (128, 128, 128),
    "grey": (128, 128, 128), "orange": (245, 140, 30), "pink": (240, 130, 180), "brown": (130, 80, 40),
}


@dataclass(frozen=True)
class LayoutObject:
    """One object of a layout: a caption and a box ``(x0, y0, x1, y1)`` in canvas fractions."""

    caption: str
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"box {self.box} of {self.caption!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if not self.caption.strip():
            raise ValueError("a layout object needs a caption")

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass(frozen=True)
class Layout:
    """A planned picture: ``objects`` (caption and box each) on a ``background``.

    ``prompt`` is the text it was planned from; ``planner`` names the backend
    that planned it (for provenance and comparisons).
    """

    objects: tuple[LayoutObject, ...]
    background: str = ""
    prompt: str = ""
    planner: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def as_dict(self) -> dict[str, Any]:
        """The layout as JSON-ready data (the format the language-model planners write)."""
        return {"background": self.background,
                "objects": [{"caption": o.caption, "box": [round(v, 4) for v in o.box]} for o in self.objects]}

    @classmethod
    def from_dict(cls, data: Any, *, prompt: str = "", planner: str = "") -> Layout:
        """Read a layout from JSON-ready data; raises ``TypeError`` or ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise TypeError('a layout is {"background": str, "objects": [{"caption": str, "box": [x0, y0, x1, y1]}]}')
        objects = []
        for index, item in enumerate(data["objects"]):
            if not isinstance(item, dict) or not isinstance(item.get("caption"), str):
                raise TypeError(f"objects[{index}] needs a caption string")
            box = item.get("box")
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise ValueError(f"objects[{index}].box must be four numbers [x0, y0, x1, y1], got {box!r}")
            objects.append(LayoutObject(item["caption"], tuple(float(v) for v in box)))  # type: ignore[arg-type]
        background = data.get("background", "")
        if not isinstance(background, str):
            raise TypeError(f"background must be a string, got {background!r}")
        return cls(tuple(objects), background, prompt, planner)


def to_regions(layout: Layout, *, background: str = "flat", object_fill: float = 0.56,
               background_weight: float = 0.1, decode: str = "windows") -> Any:
    """The layout as :class:`sfumato.Regions`: what a generator needs to generate it region by region.

    ``background="flat"`` keeps the canvas on the layout's background colour
    (a colour name it must be); ``"prompt"`` denoises the background prompt
    over the whole canvas. Raises ``ValueError`` naming what does not fit.
    """
    import sfumato

    if not layout.objects:
        raise ValueError("layout: no objects to generate")
    colour = None
    if background == "flat":
        if layout.background not in COLOUR_RGB:
            raise ValueError(f"layout: background {layout.background!r} is not a colour name "
                             f"({', '.join(COLOUR_RGB)}); use background='prompt'")
        colour = COLOUR_RGB[layout.background]
    return sfumato.Regions(tuple(obj.box for obj in layout.objects), tuple(obj.caption for obj in layout.objects),
                           colour, object_fill, background_weight, decode, layout.prompt)


def fill_colours(layout: Layout, palette: tuple[str, ...]) -> Layout:
    """Give each object whose caption names no colour one from ``palette`` that stands out.

    Not the background's colour and not one another caption names; objects
    with the same caption get the same colour (``three circles`` stay alike).
    The layout's notes say which colours were chosen. The grammar planner
    fills colours the same way, phrase by phrase.
    """
    def colour_of(caption: str) -> str:
        return next((word for word in caption.split() if word in COLOUR_RGB), "")

    taken = {colour_of(obj.caption) for obj in layout.objects} - {""} | {layout.background}
    free = [c for c in palette if c not in taken] or [c for c in palette if c != layout.background]
    chosen: dict[str, str] = {}
    objects, notes = [], list(layout.notes)
    for obj in layout.objects:
        if not free or colour_of(obj.caption):
            objects.append(obj)
            continue
        if obj.caption not in chosen:
            chosen[obj.caption] = free[len(chosen) % len(free)]
            notes.append(f"colour {chosen[obj.caption]!r} chosen for {obj.caption!r}")
        objects.append(LayoutObject(f"{chosen[obj.caption]} {obj.caption}", obj.box))
    return Layout(tuple(objects), layout.background, layout.prompt, layout.planner, tuple(notes))
