"""sfumato_retrieval: semantic retrieval over captioned images (built-in plugin).

Indexes are safetensors vectors + JSON metadata; search is exact cosine by
default, with an optional FAISS backend (``pip install sfumato[faiss]``).
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.build, nodes.add_images, nodes.query, nodes.hit_images, nodes.hit_captions]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
