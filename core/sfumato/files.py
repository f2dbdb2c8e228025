"""Writing output files safely: inside the output folder, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


class UnsafePathError(ValueError):
    """A requested output path would leave the output folder."""


def path_inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refusing absolute paths and anything that escapes ``folder``."""
    if not relative or Path(relative).is_absolute() or relative.startswith(("~", "\\")):
        raise UnsafePathError(f"output name {relative!r} must be a relative path inside the output folder")
    root = folder.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"output name {relative!r} escapes the output folder {root}")
    return target


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash never leaves a half-written file under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def claim_new_file(path: Path) -> Path:
    """Atomically create ``path`` empty, or the first free ``stem-N`` beside it; returns the claimed path.

    Creating with O_EXCL means two concurrent savers never pick the same name.
    """
    candidate, counter = path, 1
    while True:
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return candidate
        except FileExistsError:
            candidate = path.with_name(f"{path.stem}-{counter}{path.suffix}")
            counter += 1
