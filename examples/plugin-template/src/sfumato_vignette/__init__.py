"""sfumato-vignette: an example third-party plugin.

Every hook a plugin may implement lives in this module; the nodes live in
``nodes.py``. Names are namespaced by the plugin (node ids ``vignette.*``, the
port type ``VignettePalette``, the command ``vignette``), so two plugins made
from this template do not collide once each renames its namespace.
"""

from __future__ import annotations

import argparse
from typing import Any

import sfumato

from .nodes import (
    VignettePalette,
    apply_vignette,
    extract_palette,
    palette_as_text,
    palette_swatch,
)


@sfumato.hookimpl
def sfumato_port_types() -> list[sfumato.PortType]:
    return [sfumato.PortType("VignettePalette", VignettePalette, "dominant colours of an image batch",
                             default_output_name="palette")]


@sfumato.hookimpl
def sfumato_port_conversions() -> list[tuple[str, str, Any]]:
    # A palette may feed any Text input (e.g. a caption) as its hex colours.
    return [("VignettePalette", "Text", palette_as_text)]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [apply_vignette, extract_palette, palette_swatch]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("vignette", help="print the palette of an image (from the vignette plugin)")
    parser.add_argument("image", help="a PNG or JPEG file")
    parser.add_argument("--colours", type=int, default=5, help="how many colours (1-32)")
    parser.set_defaults(handler=_print_palette)


def _print_palette(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as image:
            images = sfumato.ImageBatch((image.convert("RGB"),))
    except (OSError, UnidentifiedImageError) as error:
        print(f"error: cannot read {args.image}: {error}")
        return 2
    if not 1 <= args.colours <= 32:
        print(f"error: --colours must be between 1 and 32, got {args.colours}")
        return 2
    print(palette_as_text(extract_palette(images, args.colours)))
    return 0
