"""Resizing, upscaling, cropping and padding."""

from __future__ import annotations

from typing import Annotated, Literal

from PIL import Image, ImageOps

from sfumato import Field, ImageBatch, node

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "nearest": Image.Resampling.NEAREST,
}
Method = Literal["lanczos", "bicubic", "bilinear", "box", "hamming", "nearest"]
Size = Annotated[int, Field(ge=1, le=16384)]


@node("image.resize", category="image")
def resize(
    images: ImageBatch,
    width: Size = 512,
    height: Size = 512,
    method: Method = "lanczos",
    fit: Literal["stretch", "contain", "cover"] = "stretch",
) -> ImageBatch:
    """Resize every image to ``width`` x ``height``.

    Args:
        images: the images.
        width: target width in pixels.
        height: target height in pixels.
        method: resampling filter (lanczos for photos, nearest for pixel art).
        fit: stretch to the size, contain (fit inside, keep aspect) or cover (fill and crop).
    """
    size, resample = (width, height), RESAMPLING[method]
    if fit == "contain":
        return images.map(lambda im: ImageOps.contain(im, size, method=resample))
    if fit == "cover":
        return images.map(lambda im: ImageOps.fit(im, size, method=resample))
    return images.map(lambda im: im.resize(size, resample))


@node("image.upscale", category="image")
def upscale(
    images: ImageBatch,
    factor: Annotated[float, Field(gt=0, le=16)] = 2.0,
    method: Method = "lanczos",
) -> ImageBatch:
    """Scale every image by ``factor`` (also below 1 to shrink).

    Args:
        images: the images.
        factor: the scale factor.
        method: resampling filter.
    """
    def scale(image: Image.Image) -> Image.Image:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, RESAMPLING[method])

    return images.map(scale)


@node("image.crop", category="image")
def crop(
    images: ImageBatch,
    left: Annotated[int, Field(ge=0)] = 0,
    top: Annotated[int, Field(ge=0)] = 0,
    width: Annotated[int, Field(ge=0)] = 0,
    height: Annotated[int, Field(ge=0)] = 0,
    center: bool = False,
) -> ImageBatch:
    """Crop a box from every image.

    Args:
        images: the images.
        left: left edge of the box (ignored with ``center``).
        top: top edge of the box (ignored with ``center``).
        width: box width; 0 means up to the right edge.
        height: box height; 0 means up to the bottom edge.
        center: centre the box in the image.
    """
    def cut(image: Image.Image) -> Image.Image:
        w = width or image.width - (0 if center else left)
        h = height or image.height - (0 if center else top)
        x, y = ((image.width - w) // 2, (image.height - h) // 2) if center else (left, top)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image.width or y + h > image.height:
            raise ValueError(f"crop box {w}x{h} at ({x}, {y}) does not fit a {image.width}x{image.height} image")
        return image.crop((x, y, x + w, y + h))

    return images.map(cut)


@node("image.pad", category="image")
def pad(
    images: ImageBatch,
    left: Annotated[int, Field(ge=0, le=8192)] = 0,
    top: Annotated[int, Field(ge=0, le=8192)] = 0,
    right: Annotated[int, Field(ge=0, le=8192)] = 0,
    bottom: Annotated[int, Field(ge=0, le=8192)] = 0,
    colour: str = "#000000",
) -> ImageBatch:
    """Add a border of ``colour`` around every image.

    Args:
        images: the images.
        left: pixels added on the left.
        top: pixels added on top.
        right: pixels added on the right.
        bottom: pixels added at the bottom.
        colour: any colour Pillow understands (``#rrggbb``, ``white``...).
    """
    from PIL import ImageColor

    try:
        fill = ImageColor.getrgb(colour)
    except ValueError:
        raise ValueError(f"unknown colour {colour!r}; use #rrggbb or a name such as 'white'") from None
    return images.map(lambda im: ImageOps.expand(im, (left, top, right, bottom),
                                                  fill=fill if im.mode != "L" else fill[0]))
