"""SHA-256 hashes of model files, computed once per file version and remembered.

A model is a single file (a ``.safetensors`` checkpoint, a LoRA) or a folder
of files (a diffusers pipeline, a zoo model). Its hash is the SHA-256 of the
file, or, for a folder, the SHA-256 of its files' relative paths and hashes
in order — the same definition the model library lists (``sfumato models
list``), so the hash in a PNG can be looked up there.

Hashing a checkpoint of several gigabytes takes a while, so each file's hash is
remembered by path, size and modification time: in memory, and in a small
index on disk (``$SFUMATO_HASH_INDEX``, else
``$XDG_CACHE_HOME/sfumato/file-hashes.json``), so a run hashes a model file
only the first time it is used, not on every run or in every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_INDEX = "SFUMATO_HASH_INDEX"
_CHUNK = 1 << 20
#: Entries kept in the on-disk index (older ones are dropped first).
MAX_INDEX_ENTRIES = 20_000

_lock = threading.Lock()
_memory: dict[str, str] = {}
_disk_loaded_from: Path | None = None


def index_path() -> Path:
    """Where the on-disk index of file hashes is kept."""
    explicit = os.environ.get(ENV_INDEX)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "sfumato" / "file-hashes.json"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _load_disk_index() -> None:
    """Merge the on-disk index into memory (once per index path)."""
    global _disk_loaded_from
    path = index_path()
    if _disk_loaded_from == path:
        return
    _disk_loaded_from = path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        _memory.update({k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and len(v) == 64})


def _save_disk_index() -> None:
    path = index_path()
    entries = dict(list(_memory.items())[-MAX_INDEX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=0))
        temporary.replace(path)
    except OSError:
        pass  # a read-only cache folder only means hashing again in the next process


def file_sha256(path: Path) -> str:
    """SHA-256 of one file, read in 1 MiB chunks; remembered by path, size and modification time."""
    stamp = _stamp(path)
    with _lock:
        _load_disk_index()
        known = _memory.get(stamp)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    with _lock:
        _memory[stamp] = digest.hexdigest()
        _save_disk_index()
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """The files of a model folder, in the order its hash covers them (hidden files and folders left out)."""
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts))


@dataclass(frozen=True)
class ModelHash:
    """A model's SHA-256 and, for a folder, each file's.

    Attributes:
        sha256: of the file, or of a folder's relative paths and file hashes.
        files: relative path -> SHA-256 of each file of a folder (empty for a single file).
    """

    sha256: str
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, **({"files": dict(self.files)} if self.files else {})}


def model_hash(location: Path) -> ModelHash:
    """The hash of the model at ``location`` (a file or a folder); raises ``OSError`` when it cannot be read."""
    if location.is_file():
        return ModelHash(file_sha256(location))
    files = {path.relative_to(location).as_posix(): file_sha256(path) for path in folder_files(location)}
    combined = hashlib.sha256()
    for relative, sha in files.items():
        combined.update(f"{relative}\0{sha}\n".encode())
    return ModelHash(combined.hexdigest(), files)


def remembered_model_hash(location: Path) -> ModelHash | None:
    """:func:`model_hash` when every file's hash is remembered (nothing is read), else ``None``.

    For listings that must stay fast (a model library with large files not hashed yet).
    """
    files = [location] if location.is_file() else folder_files(location)
    with _lock:
        _load_disk_index()
        if any(_stamp(path) not in _memory for path in files):
            return None
    return model_hash(location)


def forget_hashes() -> None:
    """Forget the hashes remembered in memory (tests; the on-disk index is read again on next use)."""
    global _disk_loaded_from
    with _lock:
        _memory.clear()
        _disk_loaded_from = None
