"""sfumato_layout: language plans the picture (built-in plugin).

Registers the ``Layout`` port type (objects with box and caption, and a
background), ``layout.plan`` (prompt -> layout, by a deterministic grammar
parser or a language model: the shipped tiny planner or any local causal
LM, under constrained decoding), ``layout.prompts`` (a layout's region prompts, for ``encode.text``),
``layout.draw`` (boxes and captions, for inspection) and ``layout.generate``
(regional generation: per-region prompts denoised in their windows and fused
each step, for any diffusers UNet), ``layout.regions`` (a layout as
``sfumato.Regions``, the core's value that ``diffusion.generate`` takes; a
``Layout`` output linked to a ``Regions`` input converts the same way, with
the defaults), and ``sfumato layout train`` (the
language-model planner's training, with checkpoints and resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sfumato

from .layout import Layout, LayoutObject

__all__ = ["Layout", "LayoutObject"]


@sfumato.hookimpl
def sfumato_port_types() -> list[sfumato.PortType]:
    return [sfumato.PortType("Layout", Layout, "objects with box and caption, on a background")]


#: Where the plugin's own weights are (the shipped layout planner).
WEIGHTS = Path(__file__).parent / "weights"


@sfumato.hookimpl
def sfumato_model_sources() -> list[sfumato.ModelSource]:
    return [sfumato.ModelSource("tiny-layout-planner", WEIGHTS / "tiny-layout-planner",
                                "a small GPT-2 that writes layout JSON from a prompt (layout.plan planner='model')",
                                kind="layout-planner")]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.plan, nodes.region_prompts, nodes.draw, nodes.generate, nodes.regions]


@sfumato.hookimpl
def sfumato_port_conversions() -> list[tuple[str, str, Any]]:
    from .layout import to_regions

    # A layout links straight into a generator's Regions input (flat background, windows decoding).
    return [("Layout", "Regions", to_regions)]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
