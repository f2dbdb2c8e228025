"""Contact sheets and text cards."""

from __future__ import annotations

import math
import textwrap
from typing import Annotated, Any

from PIL import Image, ImageColor, ImageDraw, ImageFont

from sfumato import Field, ImageBatch, current_limits, node


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


@node("image.grid", category="image")
def grid(
    images: ImageBatch,
    columns: Annotated[int, Field(ge=0, le=64)] = 0,
    cell: Annotated[int, Field(ge=8, le=4096)] = 256,
    captions: bool = True,
    padding: Annotated[int, Field(ge=0, le=256)] = 8,
    background: str = "#ffffff",
    title: str = "",
) -> ImageBatch:
    """Compose a batch into one captioned contact sheet, in batch order.

    Each image is scaled to fit a ``cell`` x ``cell`` square (pixel art stays
    sharp: small images are enlarged with nearest-neighbour); captions are the
    batch labels.

    Args:
        images: the images.
        columns: images per row; 0 picks a near-square layout.
        cell: the size of each cell in pixels.
        captions: write each image's label under it.
        padding: space between cells.
        background: the sheet colour.
        title: an optional line above the grid.
    """
    if len(images) == 0:
        raise ValueError("cannot make a grid of an empty batch")
    count = len(images)
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    font_size = max(10, cell // 14)
    font = _font(font_size)
    caption_height = (font_size + 4) * 2 if captions and any(images.labels) else 0
    title_height = font_size * 2 if title else 0
    width = cols * cell + (cols + 1) * padding
    height = title_height + rows * (cell + caption_height) + (rows + 1) * padding
    current_limits().check_image(width, height, f"image.grid of {count} images in {cols} columns")
    sheet = Image.new("RGB", (width, height), ImageColor.getrgb(background))
    draw = ImageDraw.Draw(sheet)
    ink = (0, 0, 0) if sum(ImageColor.getrgb(background)) > 382 else (255, 255, 255)
    if title:
        draw.text((padding, padding // 2 + 2), title, fill=ink, font=font)
    for index, image in enumerate(images.images):
        row, col = divmod(index, cols)
        x = padding + col * (cell + padding)
        y = title_height + padding + row * (cell + caption_height + padding)
        scale = min(cell / image.width, cell / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        method = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
        tile = image.convert("RGBA").resize(size, method)
        sheet.paste(tile, (x + (cell - size[0]) // 2, y + (cell - size[1]) // 2), tile)
        if caption_height and images.label(index):
            chars = max(8, int(cell / (font_size * 0.55)))
            lines = textwrap.wrap(images.label(index), chars)[:2]
            draw.multiline_text((x, y + cell + 2), "\n".join(lines), fill=ink, font=font, spacing=2)
    return ImageBatch((sheet,), (title,) if title else ())


def _describe_card(inputs: dict[str, Any], context: Any) -> dict[str, dict[str, Any]]:
    """At validation: the card's size, refused over the image limit (``LimitExceededError``)."""
    width, height = inputs.get("width"), inputs.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        return {}  # linked: checked when the node runs
    current_limits().check_image(width, height, "image.text_card width x height")
    return {"images": {"max_width": width, "max_height": height}}


@node("image.text_card", category="image", describe_outputs=_describe_card)
def text_card(
    text: str,
    width: Annotated[int, Field(ge=16, le=4096)] = 512,
    height: Annotated[int, Field(ge=16, le=4096)] = 512,
    background: str = "#20242c",
    colour: str = "#f0f0f0",
    font_size: Annotated[int, Field(ge=6, le=512)] = 32,
) -> ImageBatch:
    """Render a text onto a plain image (a title card, or a prompt preview).

    Args:
        text: what to write; long lines wrap.
        width: image width.
        height: image height.
        background: background colour.
        colour: text colour.
        font_size: text size in pixels.
    """
    try:
        fill_bg, fill_fg = ImageColor.getrgb(background), ImageColor.getrgb(colour)
    except ValueError as error:
        raise ValueError(f"unknown colour: {error}") from None
    current_limits().check_image(width, height, "image.text_card width x height")
    image = Image.new("RGB", (width, height), fill_bg)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    chars = max(4, int(width / (font_size * 0.55)))
    body = "\n".join(textwrap.wrap(text, chars)) or " "
    box = draw.multiline_textbbox((0, 0), body, font=font, spacing=font_size // 4, align="center")
    x = (width - (box[2] - box[0])) / 2
    y = (height - (box[3] - box[1])) / 2
    draw.multiline_text((x, y), body, fill=fill_fg, font=font, spacing=font_size // 4, align="center")
    return ImageBatch((image,), (text,))


@node("image.concat", category="image")
def concat(first: ImageBatch, second: ImageBatch, third: ImageBatch | None = None,
           fourth: ImageBatch | None = None) -> ImageBatch:
    """Join up to four batches into one, in order (labels kept).

    Args:
        first: the first batch.
        second: the second batch.
        third: an optional third batch.
        fourth: an optional fourth batch.
    """
    batches = [b for b in (first, second, third, fourth) if b is not None]
    images = tuple(image for batch in batches for image in batch.images)
    labels = tuple(batch.label(i) for batch in batches for i in range(len(batch)))
    return ImageBatch(images, labels if any(labels) else ())


@node("image.relabel", category="image")
def relabel(images: ImageBatch, label: str, keep: bool = False) -> ImageBatch:
    """Set every image's label (shown as its caption by ``image.grid``).

    Args:
        images: the images.
        label: the new label; ``{label}`` inserts the old one, ``{index}`` the position.
        keep: append the old label after the new one.
    """
    labels = []
    for index in range(len(images)):
        old = images.label(index)
        text = label.replace("{label}", old).replace("{index}", str(index))
        labels.append(f"{text}: {old}" if keep and old else text)
    return ImageBatch(images.images, tuple(labels))
