"""The models a graph used, by content: SHA-256 hashes of their files, for content credentials.

Images saved by ``image.save`` record the models their run used, with their
hashes, in their sfumato metadata (``models``); the credentials carry those.
For a PNG written before that record existed, the models are found from the
graph: its ``model`` inputs (a literal, a graph parameter, or the node type's
default), resolved through the run's model manager and hashed with
``sfumato.model_hash`` (a hub id that is not on disk is recorded by name only).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sfumato import model_hash


def model_names(document: dict[str, Any], params: dict[str, Any], default_of: Callable[[str], Any]) -> list[str]:
    """The model names a graph's nodes use: ``model`` inputs, given or by default, in node order."""
    declared = document.get("params") or {}
    names: list[str] = []
    for entry in (document.get("nodes") or {}).values():
        if not isinstance(entry, dict):
            continue
        value = (entry.get("inputs") or {}).get("model", default_of(str(entry.get("type", ""))))
        if isinstance(value, dict) and "param" in value:
            spec = declared.get(value["param"])
            value = params.get(value["param"], spec.get("default") if isinstance(spec, dict) else None)
        if isinstance(value, str) and value:
            names.append(value)
    return list(dict.fromkeys(names))


def weights_hash(location: Path) -> dict[str, Any]:
    """``{"sha256": ..., "files": n}``: the model's hash (as the PNG metadata records it) and its file count."""
    found = model_hash(location)
    return {"sha256": found.sha256, "files": max(1, len(found.files))}


def model_hashes(names: list[str], resolve: Callable[[str], Path | str]) -> dict[str, dict[str, Any]]:
    """Each model name with the hash of its files (or why there is none)."""
    hashes: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            location = resolve(name)
        except Exception as error:  # noqa: BLE001 - a model that no longer resolves is recorded, not fatal
            hashes[name] = {"error": str(error).splitlines()[0]}
            continue
        hashes[name] = {"hub_id": location} if isinstance(location, str) else weights_hash(Path(location))
    return hashes


def recorded_hashes(metadata: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The model hashes a PNG's sfumato metadata records (``None`` for metadata from before they were).

    Each model keeps its SHA-256 (or hub id) and its file count; its local path
    stays out of the signed manifest.
    """
    recorded = metadata.get("models")
    if not isinstance(recorded, dict):
        return None
    hashes: dict[str, dict[str, Any]] = {}
    for name, model in recorded.items():
        if model.get("sha256"):
            hashes[name] = {"sha256": model["sha256"], "files": max(1, len(model.get("files") or {}))}
        else:
            hashes[name] = {key: model[key] for key in ("hub_id", "error") if key in model}
    return hashes
