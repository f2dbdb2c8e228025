"""The retrieval index: safetensors vectors + a JSON list of items, built from captioned images.

An index folder holds ``vectors.safetensors`` (``vectors``: float32, N x dimension,
unit length) and ``index.json`` (format, model, dimension, and per item its
path, caption, size and content hash). Paths inside the index folder's
parent tree are stored relative to the index, so the folder can move with its
images. Re-indexing embeds only items that are new or changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

#: Checks a path before it is read (a run context's ``readable_path``); returns it, or raises.
PathCheck = Callable[[Path], Path]
#: Reports progress: ``(done, total, message)``.
Progress = Callable[[int, int, str], None]


def _any_path(path: Path) -> Path:
    return path


def _no_progress(done: int, total: int, message: str) -> None:
    return None


#: Captions embedded per encoder call while building, so progress can be shown between calls.
EMBED_BATCH = 64

import numpy as np

INDEX_FORMAT = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class IndexItem:
    """One indexed image."""

    path: str
    caption: str
    size: int = 0
    sha256: str = ""


@dataclass
class RetrievalIndex:
    """Vectors and items, with the encoder that made them."""

    folder: Path
    model: str
    dimension: int
    items: list[IndexItem]
    vectors: np.ndarray
    _faiss: Any = field(default=None, repr=False, compare=False)

    def faiss_index(self) -> Any:
        """A FAISS flat inner-product index over the vectors (built once)."""
        if self._faiss is None:
            try:
                import faiss
            except ImportError:
                from . import FAISS

                raise FAISS.error("retrieval") from None
            self._faiss = faiss.IndexFlatIP(self.dimension)
            self._faiss.add(np.ascontiguousarray(self.vectors))
        return self._faiss

    def resolve(self, item: IndexItem) -> Path:
        path = Path(item.path)
        return path if path.is_absolute() else (self.folder / path).resolve()

    @classmethod
    def load(cls, folder: str | Path, readable: PathCheck = _any_path) -> "RetrievalIndex":
        """Read the index at ``folder``; ``readable`` checks each file before it is read."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta_file = folder / "index.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"no retrieval index at {folder} (expected index.json and vectors.safetensors; "
                                    "build one with 'sfumato index build FOLDER --out INDEX')")
        meta = json.loads(readable(meta_file).read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"index {folder} has format {meta.get('format')!r}; this sfumato reads {INDEX_FORMAT}")
        items = [IndexItem(**item) for item in meta["items"]]
        vectors = load_file(str(readable(folder / "vectors.safetensors")))["vectors"] if items else \
            np.zeros((0, meta["dimension"]), dtype=np.float32)
        if len(vectors) != len(items):
            raise ValueError(f"index {folder} is damaged: {len(vectors)} vectors for {len(items)} items")
        return cls(folder, meta["model"], int(meta["dimension"]), items, vectors.astype(np.float32))

    def save(self) -> None:
        from safetensors.numpy import save_file

        from sfumato import write_atomically

        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": INDEX_FORMAT, "model": self.model, "dimension": self.dimension,
                "items": [asdict(item) for item in self.items]}
        if self.items:
            write_atomically(self.folder / "vectors.safetensors",
                             lambda tmp: save_file({"vectors": np.ascontiguousarray(self.vectors)}, str(tmp)))
        write_atomically(self.folder / "index.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))


def collect_captioned_images(folder: Path, readable: PathCheck = _any_path) -> list[tuple[Path, str]]:
    """Images with captions: a ``manifest.json`` / ``manifest.csv`` (path, caption), else sidecar ``.txt`` files.

    ``readable`` checks every file (manifest, sidecar, image) before it is read
    or listed, so a manifest entry or a link pointing outside the allowed
    folders is refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder at {folder}")
    for manifest in (folder / "manifest.json", folder / "manifest.csv"):
        if manifest.exists():
            readable(manifest)
            if manifest.suffix == ".json":
                rows = json.loads(manifest.read_text())
            else:
                with open(manifest, newline="", encoding="utf-8") as handle:
                    rows = list(csv.DictReader(handle))
            pairs = []
            for number, row in enumerate(rows, 1):
                if "path" not in row or "caption" not in row:
                    raise ValueError(f"{manifest}: entry {number} needs 'path' and 'caption'")
                pairs.append((readable((folder / row["path"]).resolve()), str(row["caption"])))
            return pairs
    pairs = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        sidecar = image.with_suffix(".txt")
        if sidecar.exists():
            pairs.append((readable(image.resolve()), readable(sidecar).read_text(encoding="utf-8").strip()))
    if not pairs:
        raise FileNotFoundError(f"{folder} holds no captioned images (sidecar .txt files, or manifest.json/.csv)")
    return pairs


def _stored_path(image: Path, index_folder: Path) -> str:
    """Relative to the index folder, so an index moves with its images."""
    try:
        return os.path.relpath(image, index_folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(image)


def build_index(pairs: Sequence[tuple[Path, str]], out: Path, model: str,
                embed: Callable[[list[str]], np.ndarray], progress: Progress = _no_progress
                ) -> tuple[RetrievalIndex, int]:
    """Build or update the index at ``out``; returns it and how many captions were embedded.

    ``progress(done, total, message)`` is called while images are hashed and
    while captions are embedded (in batches of :data:`EMBED_BATCH`).
    """
    out = Path(out)
    previous: dict[str, tuple[IndexItem, np.ndarray]] = {}
    if (out / "index.json").exists():
        old = RetrievalIndex.load(out)
        if old.model == model:
            previous = {item.path: (item, vector) for item, vector in zip(old.items, old.vectors)}
    items, vectors, to_embed = [], [], []
    for number, (image, caption) in enumerate(pairs, 1):
        data = image.read_bytes()
        if number % EMBED_BATCH == 0 or number == len(pairs):
            progress(number, len(pairs), "reading images")
        # Content hashes, not modification times: a fresh clone re-uses every vector.
        item = IndexItem(_stored_path(image, out), caption, len(data), hashlib.sha256(data).hexdigest()[:32])
        items.append(item)
        reuse = previous.get(item.path)
        if reuse is not None and reuse[0] == item:
            vectors.append(reuse[1])
        else:
            vectors.append(None)
            to_embed.append(len(items) - 1)
    for start in range(0, len(to_embed), EMBED_BATCH):
        batch = to_embed[start:start + EMBED_BATCH]
        fresh = embed([items[i].caption for i in batch])
        for row, index in enumerate(batch):
            vectors[index] = fresh[row]
        progress(start + len(batch), len(to_embed), "embedding captions")
    dimension = int(vectors[0].shape[0]) if vectors else 0
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dimension), np.float32)
    index = RetrievalIndex(out, model, dimension, items, matrix)
    index.save()
    return index, len(to_embed)


def search(index: RetrievalIndex, queries: np.ndarray, k: int, threshold: float | None = None,
           backend: str = "exact") -> list[list[tuple[int, float]]]:
    """Top-``k`` (item index, cosine score) per query, best first."""
    k = min(k, len(index.items))
    if k == 0:
        return [[] for _ in range(len(queries))]
    if backend == "faiss":
        scores, ids = index.faiss_index().search(np.ascontiguousarray(queries.astype(np.float32)), k)
        # Order ties by item index, as the exact search does.
        results = [sorted(((int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0),
                          key=lambda hit: (-round(hit[1], 5), hit[0]))
                   for row_ids, row_scores in zip(ids, scores)]
    else:
        scores = queries.astype(np.float32) @ index.vectors.T
        results = []
        for row in scores:
            # Stable sort by descending score, ties by index: same order as FAISS' flat index.
            order = np.lexsort((np.arange(len(row)), -row))[:k]
            results.append([(int(i), float(row[i])) for i in order])
    if threshold is not None:
        results = [[(i, s) for i, s in row if s >= threshold] for row in results]
    return results

