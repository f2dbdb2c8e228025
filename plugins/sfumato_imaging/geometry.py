"""Resizing, upscaling, cropping and padding.

Each node checks the size of what it will make against the resource limits
(:func:`sfumato.current_limits`) before allocating it: at validation, through
``describe_outputs``, when the size follows from literal inputs alone; when it
runs, from the actual input sizes.
"""

from __future__ import annotations

from typing import Any, Annotated, Literal

from PIL import Image, ImageOps

from sfumato import Field, ImageBatch, current_limits, node

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


def check_output_sizes(node_id: str, sizes: list[tuple[int, int]]) -> None:
    """Refuse a batch of output sizes over the limits (``LimitExceededError``), before allocating."""
    current_limits().check_batch(sizes, node_id)


def _describe_box(inputs: dict[str, Any], node_id: str) -> dict[str, dict[str, Any]]:
    """Output size from literal ``width`` and ``height`` (each image at most that); refused over the limit."""
    width, height = inputs.get("width"), inputs.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or not width or not height:
        return {}  # linked, or taken from each image at run time
    current_limits().check_image(width, height, f"{node_id} width x height")
    return {"images": {"max_width": width, "max_height": height}}


@node("image.resize", category="image", describe_outputs=lambda inputs, context: _describe_box(inputs, "image.resize"))
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
    check_output_sizes("image.resize", [size] * len(images))
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
    def target(image: Image.Image) -> tuple[int, int]:
        return max(1, round(image.width * factor)), max(1, round(image.height * factor))

    check_output_sizes(f"image.upscale factor {factor:g}", [target(image) for image in images])
    return images.map(lambda image: image.resize(target(image), RESAMPLING[method]))


@node("image.crop", category="image", describe_outputs=lambda inputs, context: _describe_box(inputs, "image.crop"))
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
        raise ValueError(f"unknown colour {colour!r:.40}; use #rrggbb or a name such as 'white'") from None
    check_output_sizes("image.pad", [(im.width + left + right, im.height + top + bottom) for im in images])
    return images.map(lambda im: ImageOps.expand(im, (left, top, right, bottom),
                                                  fill=fill if im.mode != "L" else fill[0]))
