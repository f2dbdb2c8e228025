"""sfumato_imaging: image I/O and post-processing nodes with Pillow (built-in plugin)."""

from __future__ import annotations

from typing import Any

import sfumato

from . import adjust, geometry, io, sheets


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [
        io.load_images, io.save_images,
        geometry.resize, geometry.upscale, geometry.crop, geometry.pad,
        adjust.sharpen, adjust.denoise, adjust.adjust, adjust.autocontrast, adjust.quantize,
        sheets.grid, sheets.text_card, sheets.concat, sheets.relabel,
    ]
