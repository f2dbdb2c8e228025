"""Writing output files safely: inside the output folder, atomically."""

from __future__ import annotations

import os
import secrets
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

    A crash never leaves a half-written file under the final name. The file
    gets the permissions of any file the user creates (``0o666`` less the
    umask), not the owner-only ``0o600`` of a ``mkstemp`` file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_new(lambda: path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))
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
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE))
            return candidate
        except FileExistsError:
            candidate = path.with_name(f"{path.stem}-{counter}{path.suffix}")
            counter += 1


#: The mode new files are created with; the kernel takes the user's umask off it.
_FILE_MODE = 0o666


def _create_new(name: Callable[[], Path], attempts: int = 100) -> Path:
    """Create an empty file under a fresh name from ``name()`` (O_EXCL, so never someone else's file)."""
    for _ in range(attempts):
        candidate = name()
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {candidate}")
