"""The model library: the folders named by ``SFUMATO_MODELS`` (or ``sfumato models --models DIR``).

Each folder is scanned (not recursively past diffusers folders) for diffusers
model folders and ``.safetensors`` files; every model found is listed with
its kind (pipeline, refiner, checkpoint, lora, controlnet, ip-adapter...), its family
(sd, sd2, sdxl, sd3, flux) and its SHA-256, and registered as a model source
named after it, so graphs, validation and the page's pickers know it by name.
``sha256:`` plus the first 10 hex digits of its hash names it too.

Hashing a checkpoint of several gigabytes takes a while, so hashes are
computed by ``sfumato models scan`` (or ``SFUMATO_LIBRARY_HASH=1``) and kept
in a small index keyed by path, size and modification time; loading plugins
only reads that index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sfumato import SfumatoError, model_hash, remembered_model_hash

from .families import folder_family, is_sdxl_refiner
from .singlefile import detect_file

ENV_FOLDERS = "SFUMATO_MODELS"
ENV_HASH = "SFUMATO_LIBRARY_HASH"
#: Prefix of the names a model has by its hash.
HASH_PREFIX = "sha256:"
SHORT_HASH = 10
_MAX_DEPTH = 4


@dataclass(frozen=True)
class LibraryEntry:
    """One model of the library."""

    name: str
    path: str
    kind: str
    family: str
    sha256: str = ""
    bytes: int = 0
    problem: str = ""

    @property
    def short_hash(self) -> str:
        return self.sha256[:SHORT_HASH]


def library_folders(extra: list[str] | None = None) -> list[Path]:
    """The library folders: ``extra`` first, then those in ``SFUMATO_MODELS`` (``os.pathsep``-separated)."""
    names = list(extra or []) + [part for part in os.environ.get(ENV_FOLDERS, "").split(os.pathsep) if part]
    seen: list[Path] = []
    for name in names:
        path = Path(name).expanduser().resolve()
        if path not in seen:
            seen.append(path)
    return seen


def _files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def model_sha256(path: Path) -> str:
    """SHA-256 of a single file, or of a folder: of its files' relative paths and hashes, in order.

    ``sfumato.model_hash``'s definition, so the hash a PNG's metadata records
    for a model is the one the library lists.
    """
    return model_hash(path).sha256


def _folder_kind(path: Path) -> tuple[str, str] | None:
    """(kind, family) of a diffusers folder, or ``None`` when ``path`` is not one."""
    if (path / "model_index.json").exists() or (path / "unet").is_dir():
        family = folder_family(path) or "sd"
        # A refiner is listed as such: it is no base model, nor the configs of a base single file.
        return ("refiner" if family == "sdxl" and is_sdxl_refiner(path) else "pipeline"), family
    config = path / "config.json"
    if config.exists() and any(path.glob("*.safetensors")):
        try:
            class_name = str(json.loads(config.read_text()).get("_class_name", ""))
        except (OSError, ValueError):
            return None
        if class_name == "ControlNetModel":
            width = json.loads(config.read_text()).get("cross_attention_dim", 0)
            return "controlnet", {768: "sd", 1024: "sd2", 2048: "sdxl"}.get(width, "")
        if class_name.endswith("Model") and class_name:
            return class_name.removesuffix("Model").lower() or "model", ""
    return None


def _candidates(folder: Path, depth: int = 0) -> Iterator[tuple[Path, tuple[str, str] | None]]:
    """Diffusers folders (not entered) and ``.safetensors`` files under ``folder``."""
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir():
            kind = _folder_kind(child)
            if kind is not None:
                yield child, kind
            elif depth < _MAX_DEPTH:
                yield from _candidates(child, depth + 1)
        elif child.suffix == ".safetensors":
            yield child, None


def scan(folders: list[Path], *, hash_new: bool = False) -> list[LibraryEntry]:
    """Every model in ``folders``; hashes already remembered, and computed for new files when ``hash_new``."""
    entries: list[LibraryEntry] = []
    names: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            raise SfumatoError(f"model library folder {folder} does not exist (from {ENV_FOLDERS} or --models)")
        for path, known in _candidates(folder):
            problem = ""
            if known is not None:
                kind, family = known
            else:
                try:
                    found = detect_file(path)
                    kind, family = found.kind, found.family
                except SfumatoError as error:
                    kind, family, problem = "unknown", "", str(error)
            if hash_new:
                sha = model_sha256(path)
            else:
                remembered = remembered_model_hash(path)
                sha = remembered.sha256 if remembered is not None else ""
            name = path.stem if path.is_file() else path.name
            if name in names:  # the same name in two places: the second is known by its relative path
                name = path.relative_to(folder).as_posix()
            names.add(name)
            size = sum(f.stat().st_size for f in _files_of(path))
            entries.append(LibraryEntry(name, str(path), kind, family, sha, size, problem))
    return entries


def find(entries: list[LibraryEntry], name: str) -> LibraryEntry | None:
    """The entry called ``name``: by library name, path, or (a prefix of at least 10 digits of) its SHA-256."""
    wanted = name.removeprefix(HASH_PREFIX).lower()
    for entry in entries:
        if name == entry.name or (name and Path(name).expanduser().resolve() == Path(entry.path)):
            return entry
    if len(wanted) >= SHORT_HASH:
        matches = [entry for entry in entries if entry.sha256 and entry.sha256.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
    return None


def as_dict(entry: LibraryEntry) -> dict[str, object]:
    return asdict(entry)


def model_sources() -> list[object]:
    """The library as model sources: one per model by name, one per hashed model by ``sha256:<10 digits>``."""
    import sfumato

    folders = library_folders()
    if not folders:
        return []
    try:
        entries = scan(folders, hash_new=os.environ.get(ENV_HASH, "") not in ("", "0"))
    except SfumatoError:
        return []  # a missing library folder is reported by `sfumato models`, not by every command
    sources: list[object] = []
    for entry in entries:
        if entry.kind == "unknown":
            continue
        description = f"{entry.family or '?'} {entry.kind} in the model library" + (
            f", sha256 {entry.short_hash}" if entry.sha256 else "")
        sources.append(sfumato.ModelSource(entry.name, Path(entry.path), description, kind=entry.kind,
                                           family=entry.family, sha256=entry.sha256))
        if entry.sha256:
            sources.append(sfumato.ModelSource(f"{HASH_PREFIX}{entry.short_hash}", Path(entry.path),
                                               f"{entry.name} by its hash", kind=entry.kind, family=entry.family,
                                               sha256=entry.sha256))
    return sources


def config_folder_for(family: str, kind: str = "pipeline") -> Path | None:
    """A diffusers folder of ``family`` in the library (a ``pipeline``, or an SDXL ``refiner``), whose
    configs single files of that family and kind use."""
    folders = [folder for folder in library_folders() if folder.is_dir()]
    for folder in folders:
        for path, known in _candidates(folder):
            if known == (kind, family):
                return path
    return None
