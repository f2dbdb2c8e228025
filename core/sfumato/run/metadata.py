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

from ..errors import GraphValidationError, SfumatoError
from ..graph.jsontext import JSONTextError, describe_problems, json_problems, parse_json
from ..plugin.context import RunContext

PNG_KEY = "sfumato"
METADATA_FORMAT = 1
#: The longest ``sfumato`` text chunk read (decompressed); a graph with its
#: parameters is a few kilobytes, so a larger chunk is refused, not parsed.
MAX_METADATA_CHARS = 8 * 2**20
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
    from ..registry import default_registry

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


class MetadataError(SfumatoError, ValueError):
    """A PNG holds no sfumato metadata, or metadata that is damaged or crafted.

    Also a ``ValueError`` for callers written against earlier versions.
    """


#: Field -> (accepted types, description) for the optional fields of the metadata.
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((int,), "an integer"),
    "params": ((dict,), "an object"),
    "seed": ((int, type(None)), "an integer"),
    "node": ((str, type(None)), "a string"),
    "index": ((int, type(None)), "an integer"),
    "versions": ((dict,), "an object"),
    "plugins": ((dict,), "an object"),
}


def check_metadata(data: Any, where: str = "the metadata") -> dict[str, Any]:
    """Check decoded metadata is what sfumato writes; raise :class:`MetadataError` if not.

    PNG metadata is untrusted: anyone can write a text chunk. The result has a
    ``graph`` object, ``params``/``versions``/``plugins`` objects, an integer
    (or null) ``seed`` and ``index``, and only safe JSON values inside.
    """
    if not isinstance(data, dict):
        raise MetadataError(f"{where} is damaged: expected a JSON object, got {type(data).__name__}")
    unsafe = json_problems(data, limit=3)
    if unsafe:
        raise MetadataError(f"{where} is damaged: {describe_problems(unsafe)}")
    if not isinstance(data.get("graph"), dict):
        raise MetadataError(f"{where} is damaged: 'graph' must be a graph object")
    from ..graph.document import Graph

    try:
        # The stored graph's structure, as a graph file's (its node types are checked when run).
        issues = list(Graph.from_dict(data["graph"], source="the stored graph").input_errors)
    except GraphValidationError as error:
        issues = error.issues
    if issues:
        problems = "; ".join(str(issue) for issue in issues[:3])
        raise MetadataError(f"{where} is damaged: the stored graph is not a valid graph: {problems}")
    for name, (types, text) in _FIELDS.items():
        if name in data and (not isinstance(data[name], types) or isinstance(data[name], bool)):
            raise MetadataError(f"{where} is damaged: {name!r} must be {text}, "
                                f"not {type(data[name]).__name__}")
    for name in ("versions", "plugins"):
        if not all(isinstance(value, str) for value in data.get(name, {}).values()):
            raise MetadataError(f"{where} is damaged: the values of {name!r} must be strings")
    if isinstance(data.get("index"), int) and data["index"] < 0:
        raise MetadataError(f"{where} is damaged: 'index' must not be negative")
    return data


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The sfumato metadata of a PNG, checked by :func:`check_metadata`.

    Raises :class:`MetadataError` (a ``ValueError``) when the file is no
    readable PNG, has no metadata, or has metadata that is damaged or crafted.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # Only the chunks before the pixel data, which is where image.save puts
            # them: reading ``image.text`` would decode every pixel of a crafted
            # 20000x20000 file first. Pillow refuses text chunks over its
            # MAX_TEXT_CHUNK (1 MB, also after decompression) as it reads them.
            raw = image.info.get(PNG_KEY)
    except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, OSError, ValueError) as error:
        raise MetadataError(f"{path}: cannot read it as a PNG: {error}") from None
    if raw is None:
        raise MetadataError(f"{path} holds no sfumato metadata (was it saved by sfumato's image.save?)")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise MetadataError(f"{path}: the sfumato metadata is damaged: not text")
    if len(raw) > MAX_METADATA_CHARS:
        raise MetadataError(f"{path}: the sfumato metadata is {len(raw):,} characters; "
                            f"at most {MAX_METADATA_CHARS:,} are read")
    try:
        data = parse_json(raw)
    except JSONTextError as error:
        raise MetadataError(f"{path}: the sfumato metadata is damaged: {error}") from None
    return check_metadata(data, f"{path}: the sfumato metadata")
