"""Caches of node outputs keyed by signature: in memory, and optionally on disk.

The disk cache stores each entry in its own folder, written to a temporary
folder first and renamed into place, with a manifest holding the SHA-256 of
every file. An entry that is partial, corrupt or unreadable is discarded and
recomputed, never trusted. Nothing in an entry is followed or waited on: an
entry, or a file in it, that is a symbolic link, a FIFO, a device or anything
but a plain file (folder) is skipped and recomputed. Files are read once, into
memory, and decoded from the bytes whose hash was checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from .codecs import Unencodable, ValueCodec, decode_outputs, encode_outputs

MANIFEST = "manifest.json"
#: Bumped when encodings change: format 1 stored tuples as JSON lists (they came back as lists),
#: so its entries are recomputed rather than handed back with the wrong types.
CACHE_FORMAT = 2
#: Opening never follows a link and never waits for a FIFO's writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class _NotAPlainFile(Exception):
    """An entry holds a link, FIFO, device or socket where a plain file or folder belongs."""


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


def _read_plain_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a plain file (checked on the open handle, so no race)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # not even opened: opening a device can act
            raise _NotAPlainFile(f"{path.name} is not a plain file")
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:  # ELOOP: a symbolic link; ENXIO: a FIFO without writer; ...
        raise _NotAPlainFile(f"{path.name}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise _NotAPlainFile(f"{path.name} is not a plain file")
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(descriptor)


def _is_plain_folder(path: Path) -> bool:
    """Whether ``path`` exists as a real folder (not a link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove an entry without following it: a link or special file is unlinked, a folder deleted."""
    try:
        if _is_plain_folder(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


class DiskCache:
    """Node outputs stored across processes in safe formats (JSON, PNG, safetensors)."""

    def __init__(self, folder: str | Path, codecs: Mapping[str, ValueCodec] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        #: Plugins' codecs by name (the registry's), for their own value types.
        self.codecs: Mapping[str, ValueCodec] = codecs if codecs is not None else {}
        #: Signatures whose entries were found broken and removed (for reports and tests).
        self.discarded: list[str] = []

    def _entry(self, signature: str) -> Path:
        return self.folder / signature[:2] / signature

    def get(self, signature: str) -> dict[str, Any] | None:
        """The stored outputs, or ``None`` when absent or not trustworthy."""
        entry = self._entry(signature)
        try:
            os.lstat(entry)
        except OSError:
            return None  # absent: the common case
        try:
            if not _is_plain_folder(entry.parent) or not _is_plain_folder(entry):
                raise _NotAPlainFile("the entry is not a plain folder")
            manifest = json.loads(_read_plain_file(entry / MANIFEST))
            if manifest.get("format") != CACHE_FORMAT or manifest.get("signature") != signature:
                raise ValueError("manifest does not match its entry")
            files = {}
            for name, expected in manifest["sha256"].items():
                if "/" in name or "\\" in name or name.startswith("."):
                    raise ValueError(f"unsafe file name {name!r}")
                data = _read_plain_file(entry / name)
                if hashlib.sha256(data).hexdigest() != expected:
                    raise ValueError(f"file {name} is damaged")
                files[name] = data
            return decode_outputs(manifest["outputs"], files, self.codecs)
        except Exception:  # noqa: BLE001 - anything wrong with an entry means: recompute
            self.discarded.append(signature)
            if _is_plain_folder(entry.parent):
                _remove(entry)
            return None

    def put(self, signature: str, outputs: dict[str, Any]) -> bool:
        """Store outputs; returns False (and stores nothing) when they have no safe form."""
        entry = self._entry(signature)
        entry.parent.mkdir(parents=True, exist_ok=True)
        if not _is_plain_folder(entry.parent):
            return False  # a planted link where a prefix folder belongs: write nothing through it
        staging = Path(tempfile.mkdtemp(prefix=f".{signature[:8]}-", dir=entry.parent))
        try:
            encoded, files = encode_outputs(outputs, staging, self.codecs)
            manifest = {
                "format": CACHE_FORMAT,
                "signature": signature,
                "outputs": encoded,
                "sha256": {name: _sha256(staging / name) for name in files},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest))
            if os.path.lexists(entry):
                _remove(entry)
            os.replace(staging, entry)
            return True
        except (Unencodable, RecursionError):  # no safe form, or nested too deep for JSON
            return False
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
