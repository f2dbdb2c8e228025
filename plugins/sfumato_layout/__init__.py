"""sfumato_layout: language plans the picture (built-in plugin).

Registers the ``Layout`` port type (objects with box and caption, and a
background), ``layout.plan`` (prompt -> layout, by a deterministic grammar
parser), ``layout.prompts`` (a layout's region prompts, for ``encode.text``),
``layout.draw`` (boxes and captions, for inspection) and ``layout.generate``
(regional generation: per-region prompts denoised in their windows and fused
each step, for any diffusers UNet), and ``sfumato layout train`` (the
language-model planner's training, with checkpoints and resume).
"""

from __future__ import annotations

from typing import Any

import sfumato

from .layout import Layout, LayoutObject

__all__ = ["Layout", "LayoutObject"]


@sfumato.hookimpl
def sfumato_port_types() -> list[sfumato.PortType]:
    return [sfumato.PortType("Layout", Layout, "objects with box and caption, on a background")]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.plan, nodes.region_prompts, nodes.draw, nodes.generate]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
