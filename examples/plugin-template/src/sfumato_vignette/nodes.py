"""The template's nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from PIL import Image, ImageDraw, ImageFilter

from sfumato import Field, ImageBatch, node


@dataclass(frozen=True)
class VignettePalette:
    """Colours as ``(r, g, b)`` tuples, most frequent first."""

    colours: tuple[tuple[int, int, int], ...]


def palette_as_text(palette: VignettePalette) -> str:
    """The palette as hex colours, ``"#ff0000 #00ff00"`` (the VignettePalette -> Text conversion)."""
    return " ".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette.colours)


@node("vignette.apply", category="postprocess")
def apply_vignette(
    images: ImageBatch,
    strength: Annotated[float, Field(ge=0, le=1)] = 0.5,
    softness: Annotated[float, Field(gt=0, le=1)] = 0.5,
) -> ImageBatch:
    """Darken the corners of every image.

    Args:
        images: the images.
        strength: how dark the corners get (0 = unchanged, 1 = black).
        softness: how gradual the falloff is.
    """
    def apply(image: Image.Image) -> Image.Image:
        width, height = image.size
        mask = Image.new("L", image.size, 0)
        inset_x, inset_y = width * softness / 4, height * softness / 4
        ImageDraw.Draw(mask).ellipse((inset_x, inset_y, width - inset_x, height - inset_y), fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(max(width, height) * softness / 6))
        dark = Image.new(image.mode, image.size, 0)
        faded = Image.blend(image, dark, strength)
        return Image.composite(image, faded, mask)

    return images.map(apply)


@node("vignette.palette", category="analysis")
def extract_palette(images: ImageBatch, colours: Annotated[int, Field(ge=1, le=32)] = 5) -> VignettePalette:
    """The most frequent colours of a batch (after reducing each image to ``colours`` colours)."""
    counts: dict[tuple[int, int, int], int] = {}
    for image in images.images:
        reduced = image.convert("RGB").quantize(colours).convert("RGB")
        for count, colour in reduced.getcolors(colours) or []:
            counts[colour] = counts.get(colour, 0) + count
    ranked = sorted(counts, key=lambda c: -counts[c])[:colours]
    return VignettePalette(tuple(ranked))


@node("vignette.swatch", category="analysis")
def palette_swatch(palette: VignettePalette, size: Annotated[int, Field(ge=4, le=512)] = 32) -> ImageBatch:
    """Draw a palette as a row of squares."""
    image = Image.new("RGB", (size * max(1, len(palette.colours)), size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for index, colour in enumerate(palette.colours):
        draw.rectangle((index * size, 0, (index + 1) * size - 1, size - 1), fill=colour)
    return ImageBatch((image,), ("palette",))
