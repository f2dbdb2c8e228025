"""Reproducibility metadata stored in the PNG files sfumato writes.

Each PNG carries a ``sfumato`` text chunk with JSON: the graph document, the
resolved parameters, the seed, the image's index in its batch and the versions
of sfumato, its plugins and the main libraries. ``sfumato run IMAGE.png`` runs
it again; ``sfumato inspect IMAGE.png`` prints it.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from .context import RunContext

PNG_KEY = "sfumato"
METADATA_FORMAT = 1
_LIBRARIES = ("torch", "diffusers", "transformers", "pillow", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape pixels (without importing them)."""
    versions = {}
    for name in ("sfumato", *_LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def plugin_versions() -> dict[str, str]:
    from .registry import default_registry

    return {
        record.name: record.version or "local"
        for record in default_registry().plugins.values() if record.status == "ok"
    }


def image_metadata(context: RunContext, index: int = 0) -> dict[str, Any]:
    """The metadata to store with the ``index``-th image a node saves."""
    return {
        "format": METADATA_FORMAT,
        "graph": context.graph_document,
        "params": context.params,
        "seed": context.seed,
        "node": context.node_id,
        "index": index,
        "versions": library_versions(),
        "plugins": plugin_versions(),
    }


def png_info(data: dict[str, Any]) -> Any:
    """A Pillow ``PngInfo`` holding ``data`` as the ``sfumato`` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(PNG_KEY, json.dumps(data, ensure_ascii=False, default=str), zip=True)
    return info


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The sfumato metadata of a PNG; ``ValueError`` when it has none."""
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}) or image.info
        raw = text.get(PNG_KEY)
    if raw is None:
        raise ValueError(f"{path} holds no sfumato metadata (was it saved by sfumato's image.save?)")
    data = json.loads(raw)
    if not isinstance(data, dict) or "graph" not in data:
        raise ValueError(f"{path}: the sfumato metadata is damaged")
    return data
