"""Retrieval nodes: build an index, query it, load the hits."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from sfumato import (CachePolicy, Embedding, Field, ImageBatch, ReadablePath, Retrieved, RetrievedItem, RunContext,
                     WritablePath, node)

from .index import RetrievalIndex, build_index, collect_captioned_images, search

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: A folder with more entries than this is not fingerprinted (planning stays fast); its build is
#: then simply never served from the cache.
MAX_FINGERPRINT_ENTRIES = 100_000


def embed_with(context: RunContext, model: str):
    """A function embedding captions with the ``encode.sentence`` node of the encoding plugin."""
    def embed(texts: list[str]) -> Any:
        return context.call_node("encode.sentence", texts=texts, model=model).vectors

    return embed


def _folder_fingerprint(inputs: dict[str, Any]) -> str:
    """Path, size and modification time of every file under the folder (bounded)."""
    entries = list(itertools.islice(Path(inputs["folder"]).expanduser().rglob("*"), MAX_FINGERPRINT_ENTRIES + 1))
    if len(entries) > MAX_FINGERPRINT_ENTRIES:
        return f"too-many-files:{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    for path in sorted(entries):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@node("retrieve.build", category="retrieve", output="summary", output_node=True,
      cache=CachePolicy.reads_files(_folder_fingerprint))
def build(folder: ReadablePath, index: WritablePath, context: RunContext, model: str = DEFAULT_MODEL) -> dict:
    """Build (or update) a retrieval index from a folder of captioned images.

    Captions come from sidecar ``.txt`` files or a ``manifest.json``/``.csv``
    with ``path`` and ``caption``. Only new or changed items are embedded.

    Args:
        folder: the images.
        index: the index folder to write.
        model: the sentence encoder for the captions.
    """
    pairs = collect_captioned_images(context.readable_path(folder), context.readable_path)
    built, embedded = build_index(pairs, context.writable_path(index), model, embed_with(context, model),
                                  progress=lambda done, total, message: context.progress(done, total, message))
    return {"index": str(built.folder), "items": len(built.items), "embedded": embedded, "model": model}


@node("retrieve.add_images", category="retrieve", output="summary", output_node=True)
def add_images(images: ImageBatch, index: WritablePath, context: RunContext, model: str = DEFAULT_MODEL) -> dict:
    """Index a batch of images produced by a graph, captioned by their labels.

    The images are written into ``index/images/`` (named by content hash) and
    the index is updated.

    Args:
        images: labelled images (the labels are the captions).
        index: the index folder.
        model: the sentence encoder for the captions.
    """
    from sfumato import write_atomically

    folder = context.writable_path(index)
    if not images.labels or not all(images.labels):
        raise ValueError("every image needs a label to serve as its caption")
    stored = context.writable_path(folder / "images")
    stored.mkdir(parents=True, exist_ok=True)
    for image, caption in zip(images.images, images.labels):
        digest = hashlib.sha256(image.tobytes() + caption.encode()).hexdigest()[:16]
        target = stored / f"{digest}.png"
        if not target.exists():
            write_atomically(target, lambda tmp, image=image: image.save(tmp, format="PNG"))
            target.with_suffix(".txt").write_text(caption, encoding="utf-8")
    built, embedded = build_index(collect_captioned_images(stored, context.readable_path), folder, model,
                                  embed_with(context, model))
    return {"index": str(built.folder), "items": len(built.items), "embedded": embedded, "model": model}


def _index_fingerprint(inputs: dict[str, Any]) -> str:
    meta = Path(inputs["index"]).expanduser() / "index.json"
    stat = meta.stat() if meta.exists() else None
    return f"{meta}|{stat.st_size if stat else 0}|{stat.st_mtime_ns if stat else 0}"


@node("retrieve.query", category="retrieve", output="retrieved", cache=CachePolicy.reads_files(_index_fingerprint))
def query(
    index: ReadablePath,
    context: RunContext,
    texts: list[str] | None = None,
    embedding: Embedding | None = None,
    k: Annotated[int, Field(ge=1, le=10_000)] = 4,
    threshold: Annotated[float, Field(ge=-1, le=1)] | None = None,
    backend: Literal["exact", "faiss"] = "exact",
) -> Retrieved:
    """Find the indexed images whose captions best match each query (cosine similarity).

    Give ``texts`` (encoded with the index's own encoder) or an ``embedding``;
    an embedding from another encoder than the index's is refused.

    Args:
        index: the index folder.
        texts: query texts.
        embedding: query vectors from ``encode.sentence``.
        k: hits per query.
        threshold: drop hits scoring below this.
        backend: exact (NumPy) or faiss (needs faiss-cpu; same results on small indexes).
    """
    loaded = RetrievalIndex.load(context.readable_path(index), context.readable_path)
    if embedding is not None:
        if embedding.model != loaded.model or embedding.dimension != loaded.dimension:
            raise ValueError(f"the index {index} was built with {loaded.model!r} ({loaded.dimension}-d); "
                             f"the query embedding comes from {embedding.model!r} ({embedding.dimension}-d)")
        vectors = embedding.vectors
    elif texts:
        vectors = embed_with(context, loaded.model)(list(texts))
    else:
        raise ValueError("give 'texts' or 'embedding' to query the index")
    hits = search(loaded, vectors, k, threshold, backend)
    return Retrieved(tuple(
        tuple(RetrievedItem(str(loaded.resolve(loaded.items[i])), loaded.items[i].caption, score) for i, score in row)
        for row in hits), loaded.model)


@node("retrieve.images", category="retrieve", output="images")
def hit_images(retrieved: Retrieved, context: RunContext, query_index: Annotated[int, Field(ge=0)] = 0,
               with_scores: bool = True) -> ImageBatch:
    """Load the hit images of one query, best first, labelled with caption (and score).

    The paths come from an index, so each is checked against the run's path policy.

    Args:
        retrieved: results of ``retrieve.query``.
        query_index: which query's hits.
        with_scores: add the score to each label.
    """
    from PIL import Image

    if query_index >= len(retrieved.hits):
        raise ValueError(f"query_index {query_index} but there are {len(retrieved.hits)} queries")
    images, labels = [], []
    for hit in retrieved.hits[query_index]:
        with Image.open(context.readable_path(hit.path)) as image:
            images.append(image.convert("RGB"))
        labels.append(f"{hit.caption} ({hit.score:.2f})" if with_scores else hit.caption)
    if not images:
        raise ValueError("no hits for this query (is the threshold too high?)")
    return ImageBatch(tuple(images), tuple(labels))


@node("retrieve.captions", category="retrieve", output="texts")
def hit_captions(retrieved: Retrieved, query_index: Annotated[int, Field(ge=0)] = 0) -> list[str]:
    """The captions of one query's hits, best first (to encode and fuse with the prompt)."""
    if query_index >= len(retrieved.hits):
        raise ValueError(f"query_index {query_index} but there are {len(retrieved.hits)} queries")
    return [hit.caption for hit in retrieved.hits[query_index]]
