"""Sharpening, denoising, tone and colour adjustments."""

from __future__ import annotations

from typing import Annotated, Callable, Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from sfumato import Field, ImageBatch, node


@node("image.sharpen", category="postprocess")
def sharpen(
    images: ImageBatch,
    radius: Annotated[float, Field(ge=0, le=50)] = 2.0,
    percent: Annotated[int, Field(ge=0, le=500)] = 150,
    threshold: Annotated[int, Field(ge=0, le=255)] = 3,
) -> ImageBatch:
    """Sharpen with an unsharp mask.

    Args:
        images: the images.
        radius: blur radius of the mask, in pixels.
        percent: strength.
        threshold: minimum brightness change to sharpen (protects flat areas).
    """
    return images.map(lambda im: im.filter(ImageFilter.UnsharpMask(radius, percent, threshold)))


def _edge_preserving(image: Image.Image, size: int, strength: float) -> Image.Image:
    """A bilateral-like filter: average neighbours, weighted by how similar they are."""
    array = np.asarray(image, dtype=np.float32)
    squeeze = array.ndim == 2
    if squeeze:
        array = array[:, :, None]
    radius = size // 2
    padded = np.pad(array, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    total = np.zeros_like(array)
    weights = np.zeros(array.shape[:2] + (1,), dtype=np.float32)
    sigma_space, sigma_range = max(radius, 1), max(strength, 1e-3)
    height, width = array.shape[:2]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[radius + dy: radius + dy + height, radius + dx: radius + dx + width]
            difference = ((shifted - array) ** 2).sum(axis=2, keepdims=True)
            weight = np.exp(-(dx * dx + dy * dy) / (2 * sigma_space**2) - difference / (2 * sigma_range**2))
            total += shifted * weight
            weights += weight
    result = np.clip(total / weights + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(result[:, :, 0] if squeeze else result, image.mode)


@node("image.denoise", category="postprocess")
def denoise(
    images: ImageBatch,
    method: Literal["median", "bilateral"] = "median",
    size: Annotated[int, Field(ge=3, le=9, multiple_of=1)] = 3,
    strength: Annotated[float, Field(gt=0, le=255)] = 30.0,
) -> ImageBatch:
    """Reduce noise with a median filter or an edge-preserving (bilateral-like) filter.

    Args:
        images: the images.
        method: median removes speckles; bilateral smooths while keeping edges.
        size: window size in pixels (odd).
        strength: bilateral only: colour difference (0-255) still smoothed.
    """
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got {size}")
    if method == "median":
        return images.map(lambda im: im.filter(ImageFilter.MedianFilter(size)))

    def smooth(image: Image.Image) -> Image.Image:
        if image.mode == "RGBA":
            rgb = _edge_preserving(image.convert("RGB"), size, strength)
            rgb.putalpha(image.getchannel("A"))
            return rgb
        return _edge_preserving(image, size, strength)

    return images.map(smooth)


Factor = Annotated[float, Field(ge=0, le=10)]


def _keeping_alpha(image: Image.Image, adjust_rgb: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply a colour adjustment to the RGB channels only; transparency is left as it was."""
    if image.mode != "RGBA":
        return adjust_rgb(image)
    result = adjust_rgb(image.convert("RGB"))
    result.putalpha(image.getchannel("A"))
    return result


@node("image.adjust", category="postprocess")
def adjust(
    images: ImageBatch,
    brightness: Factor = 1.0,
    contrast: Factor = 1.0,
    saturation: Factor = 1.0,
    gamma: Annotated[float, Field(gt=0, le=10)] = 1.0,
) -> ImageBatch:
    """Adjust brightness, contrast, saturation (1 = unchanged) and gamma.

    Args:
        images: the images.
        brightness: 0 is black, 2 is twice as bright.
        contrast: 0 is flat gray, above 1 adds contrast.
        saturation: 0 is grayscale, above 1 is more colourful.
        gamma: above 1 brightens mid-tones, below 1 darkens them.
    """
    table = [round(255 * (i / 255) ** (1 / gamma)) for i in range(256)]

    def apply(work: Image.Image) -> Image.Image:
        for enhancer, factor in ((ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast),
                                 (ImageEnhance.Color, saturation)):
            if factor != 1.0:
                work = enhancer(work).enhance(factor)
        if gamma != 1.0:
            work = work.point(table * len(work.getbands()))
        return work

    return images.map(lambda image: _keeping_alpha(image, apply))


@node("image.autocontrast", category="postprocess")
def autocontrast(
    images: ImageBatch,
    cutoff: Annotated[float, Field(ge=0, lt=50)] = 1.0,
    preserve_tone: bool = False,
) -> ImageBatch:
    """Stretch each image's histogram to the full range.

    Args:
        images: the images.
        cutoff: percent of darkest and lightest pixels to ignore.
        preserve_tone: stretch lightness only, keeping hues.
    """
    def apply(image: Image.Image) -> Image.Image:
        return ImageOps.autocontrast(image, cutoff=cutoff, preserve_tone=preserve_tone)

    return images.map(lambda image: _keeping_alpha(image, apply))


@node("image.quantize", category="postprocess")
def quantize(
    images: ImageBatch,
    colours: Annotated[int, Field(ge=2, le=256)] = 16,
    dither: bool = False,
) -> ImageBatch:
    """Reduce every image to at most ``colours`` colours (returned as RGB).

    Args:
        images: the images.
        colours: the palette size.
        dither: Floyd-Steinberg dithering.
    """
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    return images.map(lambda im: im.convert("RGB").quantize(colours, dither=mode).convert("RGB"))
