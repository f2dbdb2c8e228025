"""sfumato_retrieval: semantic retrieval over captioned images (built-in plugin).

Indexes are safetensors vectors + JSON metadata; search is exact cosine by
default, with an optional FAISS backend (``pip install sfumato[faiss]``).
"""

from __future__ import annotations

from typing import Any

import sfumato


#: faiss-cpu is optional: ``retrieve.query`` and ``sfumato index query`` use it for ``backend="faiss"``.
FAISS = sfumato.Requirement("faiss", extra="faiss", feature="the faiss search backend of retrieve.query")


@sfumato.hookimpl
def sfumato_requirements() -> list[sfumato.Requirement]:
    return [FAISS]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.build, nodes.add_images, nodes.query, nodes.hit_images, nodes.hit_captions]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
