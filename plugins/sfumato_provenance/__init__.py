"""sfumato_provenance: invisible watermarks, content credentials and ``sfumato verify`` (built-in plugin).

``provenance.watermark`` embeds an invisible mark carrying the graph hash;
``provenance.sign`` signs saved PNGs with C2PA content credentials (your
certificate and key); ``sfumato verify IMAGE`` reads and checks both, and the
IPTC digital source type that every PNG ``image.save`` writes carries.
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.watermark_images, nodes.sign_files]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import verify

    verify.add_parser(subparsers)
