"""The models a graph used, by content: SHA-256 hashes of their weight files, for content credentials.

A model is named in a graph by a ``model`` input (a literal, a graph
parameter, or the node type's default). Its name resolves through the run's
model manager to a folder (or a file), whose weight files are hashed; a hub id
that is not on disk is recorded by name only.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf")
_HASHES: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per path, size and modification time (weights are large)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        known = _HASHES.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    with _LOCK:
        _HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def weights_hash(location: Path) -> dict[str, Any]:
    """``{"sha256": ..., "files": n}``: one hash over every weight file's path and hash."""
    files = [location] if location.is_file() else sorted(
        p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    combined = hashlib.sha256()
    for file in files:
        relative = file.name if location.is_file() else file.relative_to(location).as_posix()
        combined.update(f"{relative}:{file_sha256(file)}\n".encode())
    return {"sha256": combined.hexdigest(), "files": len(files)}


def model_hashes(names: list[str], resolve: Callable[[str], Path | str]) -> dict[str, dict[str, Any]]:
    """Each model name with the hash of its weights (or why there is none)."""
    hashes: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            location = resolve(name)
        except Exception as error:  # noqa: BLE001 - a model that no longer resolves is recorded, not fatal
            hashes[name] = {"error": str(error).splitlines()[0]}
            continue
        hashes[name] = {"hub_id": location} if isinstance(location, str) else weights_hash(Path(location))
    return hashes
