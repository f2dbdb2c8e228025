"""Loading and saving images."""

from __future__ import annotations

import hashlib
import itertools
import string
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from sfumato import ImageBatch, ReadablePath, RunContext, image_metadata, node, path_inside, png_info, write_atomically
from sfumato import CachePolicy, claim_new_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: A folder with more entries than this is not fingerprinted (planning stays fast); its node is
#: then simply never served from the cache.
MAX_FINGERPRINT_ENTRIES = 100_000


def _image_files(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no image file or folder at {path}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"the folder {path} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def _files_fingerprint(inputs: dict) -> str:
    """Path, size and modification time of every file the node would read (bounded)."""
    path = Path(inputs["path"]).expanduser()
    if path.is_dir():
        entries = path.glob("**/*" if inputs.get("recursive", False) else "*")
        if next(itertools.islice(entries, MAX_FINGERPRINT_ENTRIES, None), None) is not None:
            return f"too-many-files:{uuid.uuid4().hex}"
    try:
        files = _image_files(path, inputs.get("recursive", False))
    except FileNotFoundError as error:
        return f"missing:{error}"
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def to_8bit_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow image (16-bit, float, palette, CMYK...) to RGB, RGBA or L."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "I" or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode == "keep":
        return image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
    if mode == "RGB" and image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert(mode)


@node("image.load", category="image", output="images", cache=CachePolicy.reads_files(_files_fingerprint))
def load_images(
    path: ReadablePath,
    context: RunContext,
    recursive: bool = False,
    mode: Literal["RGB", "RGBA", "L", "keep"] = "RGB",
) -> ImageBatch:
    """Load an image file, or every image in a folder (sorted by name).

    EXIF orientation is applied; 16-bit images are scaled to 8 bits; with
    ``mode="RGB"`` transparency is flattened onto white. Labels are the file
    names. The cache notices changed files by size and modification time.
    Every file read is checked against the run's path policy (a link inside
    an allowed folder that points outside it is refused).

    Args:
        path: an image file or a folder of images.
        recursive: also look in sub-folders.
        mode: the colour mode of the result (``keep`` keeps RGB, RGBA or L).
    """
    root = context.readable_path(path)
    files = _image_files(root, recursive)
    images = []
    for file in files:
        context.readable_path(file)
        try:
            with Image.open(file) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image) or image
                images.append(to_8bit_mode(oriented, mode))
        except (OSError, SyntaxError) as error:
            raise ValueError(f"cannot read image {file}: {error}") from None
    labels = [str(f.relative_to(root)) if root.is_dir() else f.name for f in files]
    return ImageBatch(tuple(images), tuple(labels))


def _saved_files_exist(outputs: dict) -> bool:
    return all(Path(p).exists() for p in outputs.get("paths", []))


@node("image.save", category="image", output="paths", output_node=True,
      cache=CachePolicy.writes_files(_saved_files_exist, context_keys=(
          "device", "dtype", "seed", "output_dir", "params", "graph", "run_index")))
def save_images(
    images: ImageBatch,
    context: RunContext,
    template: str = "{graph}{run}-{seed}-{index}.png",
    if_exists: Literal["increment", "error", "overwrite"] = "increment",
    metadata: bool = True,
) -> list[str]:
    """Save a batch of images as PNG files in the run's output folder.

    File names come from ``template`` with ``{graph}``, ``{seed}``,
    ``{index}``, ``{node}``, ``{label}`` and ``{run}`` (``-r`` and the run's
    index in its sweep, ``-r007``; empty for a single run, so the runs of a
    sweep never share a name); a name that would leave the
    output folder (``..``, an absolute path) is refused. Files are written
    atomically. An existing file is never overwritten unless
    ``if_exists="overwrite"``: by default the new file gets a ``-1``, ``-2``
    suffix. Each PNG stores the graph, parameters, seed and versions that
    made it, so ``sfumato run IMAGE.png`` makes it again; every PNG (also
    with ``metadata=false``) carries the IPTC digital source type
    "trainedAlgorithmicMedia" in its XMP, marking it as generated.

    Args:
        images: the images to save.
        template: the file name pattern, relative to the output folder.
        if_exists: what to do when the file exists: increment, error or overwrite.
        metadata: embed reproducibility metadata.
    """
    allowed = {"graph", "seed", "index", "node", "label", "run"}
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in allowed:
            raise ValueError(f"template field {{{field}}} is unknown; use {', '.join(sorted(allowed))}")
    folder = context.output_dir
    paths = []
    for index, image in enumerate(images.images):
        label = Path(images.label(index)).stem if images.label(index) else str(index)
        run = "" if context.run_index is None else f"-r{context.run_index:03d}"
        name = template.format(graph=context.graph_name, seed=context.seed, index=index,
                               node=context.node_id, label=label, run=run)
        if not name.lower().endswith(".png"):
            name += ".png"
        target = context.writable_path(path_inside(folder, name))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and if_exists == "error":
            raise FileExistsError(f"{target} exists; set if_exists to 'increment' or 'overwrite'")
        if if_exists == "increment":
            target = claim_new_file(target)
        # The IPTC digital source type is written always; ``metadata`` governs the reproducibility data.
        info = png_info(image_metadata(context, index) if metadata else None)
        try:
            write_atomically(target, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
        except BaseException:
            if if_exists == "increment" and target.exists() and target.stat().st_size == 0:
                target.unlink()
            raise
        context.record_file(target)
        paths.append(str(target))
    return paths
