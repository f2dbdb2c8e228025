"""Caches of node outputs keyed by signature: in memory, and optionally on disk.

The disk cache stores each entry in its own folder, written to a temporary
folder first and renamed into place, with a manifest holding the SHA-256 of
every file. An entry that is partial, corrupt or unreadable is discarded and
recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .codecs import Unencodable, decode_outputs, encode_outputs

MANIFEST = "manifest.json"
CACHE_FORMAT = 1


class MemoryCache:
    """An LRU map from signature to outputs, bounded by entry count."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, signature: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is not None:
                self._entries.move_to_end(signature)
            return entry

    def put(self, signature: str, outputs: dict[str, Any]) -> None:
        with self._lock:
            self._entries[signature] = outputs
            self._entries.move_to_end(signature)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, signature: str) -> None:
        with self._lock:
            self._entries.pop(signature, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DiskCache:
    """Node outputs stored across processes in safe formats (JSON, PNG, safetensors)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        #: Signatures whose entries were found broken and removed (for reports and tests).
        self.discarded: list[str] = []

    def _entry(self, signature: str) -> Path:
        return self.folder / signature[:2] / signature

    def get(self, signature: str) -> dict[str, Any] | None:
        """The stored outputs, or ``None`` when absent or not trustworthy."""
        entry = self._entry(signature)
        manifest_path = entry / MANIFEST
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != CACHE_FORMAT or manifest.get("signature") != signature:
                raise ValueError("manifest does not match its entry")
            for name, expected in manifest["sha256"].items():
                if "/" in name or name.startswith(".") or _sha256(entry / name) != expected:
                    raise ValueError(f"file {name} is damaged")
            return decode_outputs(manifest["outputs"], entry)
        except Exception:  # noqa: BLE001 - anything wrong with an entry means: recompute
            self.discarded.append(signature)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def put(self, signature: str, outputs: dict[str, Any]) -> bool:
        """Store outputs; returns False (and stores nothing) when they have no safe form."""
        entry = self._entry(signature)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{signature[:8]}-", dir=entry.parent))
        try:
            encoded, files = encode_outputs(outputs, staging)
            manifest = {
                "format": CACHE_FORMAT,
                "signature": signature,
                "outputs": encoded,
                "sha256": {name: _sha256(staging / name) for name in files},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest))
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(staging, entry)
            return True
        except Unencodable:
            return False
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
