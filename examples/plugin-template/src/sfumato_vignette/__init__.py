"""sfumato-vignette: an example plugin with a node pair and a port type of its own."""

from __future__ import annotations

from typing import Any

import sfumato

from .nodes import Palette, apply_vignette, extract_palette, palette_swatch


@sfumato.hookimpl
def sfumato_port_types() -> list[sfumato.PortType]:
    return [sfumato.PortType("Palette", Palette, "dominant colours of an image batch")]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [apply_vignette, extract_palette, palette_swatch]
