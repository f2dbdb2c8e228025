"""Safe encodings of node outputs for the on-disk cache: JSON, PNG, safetensors.

Nothing is ever pickled. A value that no codec can store safely is simply kept
in memory only. Decoding never imports or instantiates a class named by the
file: the value classes that can be rebuilt are the fixed ones listed here.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from .values import Conditioning, Embedding, ImageBatch, Latent, PromptWeights, Retrieved, RetrievedItem

_JSON_SCALARS = (str, int, float, bool, type(None))
#: Dataclasses the cache may rebuild, by name. Only these names are ever looked up.
_DATACLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (Embedding, Conditioning, Latent, PromptWeights, Retrieved, RetrievedItem)
}


class Unencodable(Exception):
    """The value holds something without a safe on-disk form."""


def _is_json(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return not (isinstance(value, float) and value != value)  # NaN is not JSON
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


class _Writer:
    """Collects arrays for one safetensors file and images as PNG files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.arrays: dict[str, Any] = {}
        self.torch_arrays: dict[str, Any] = {}
        self.files: list[str] = []

    def encode(self, value: Any, key: str) -> Any:
        if _is_json(value):
            return {"json": value}
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return {"list": [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": {k: self.encode(v, f"{key}.{k}") for k, v in value.items()}}
        if isinstance(value, ImageBatch):
            names = []
            for index, image in enumerate(value.images):
                name = f"{key}.{index}.png"
                image.save(self.folder / name, format="PNG")
                self.files.append(name)
                names.append({"file": name, "mode": image.mode})
            return {"images": names, "labels": list(value.labels)}
        if type(value).__name__ in _DATACLASSES and _DATACLASSES[type(value).__name__] is type(value):
            fields = {f.name: self.encode(getattr(value, f.name), f"{key}.{f.name}") for f in dataclasses.fields(value)}
            return {"dataclass": type(value).__name__, "fields": fields}
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, numpy.ndarray) and value.dtype != object:
            self.arrays[key] = numpy.ascontiguousarray(value)
            return {"ndarray": key}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            self.torch_arrays[key] = value.detach().to("cpu").contiguous()
            return {"tensor": key, "device": str(value.device)}
        raise Unencodable(type(value).__name__)

    def finish(self) -> None:
        if self.arrays:
            from safetensors.numpy import save_file

            save_file(self.arrays, str(self.folder / "arrays.safetensors"))
            self.files.append("arrays.safetensors")
        if self.torch_arrays:
            from safetensors.torch import save_file as save_torch

            save_torch(self.torch_arrays, str(self.folder / "tensors.safetensors"))
            self.files.append("tensors.safetensors")


class _Reader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._arrays: dict[str, Any] | None = None
        self._tensors: dict[str, Any] | None = None

    def decode(self, encoded: Any) -> Any:
        kind = next(iter(encoded))
        if kind == "json":
            return encoded["json"]
        if kind == "tuple":
            return tuple(self.decode(v) for v in encoded["tuple"])
        if kind == "list":
            return [self.decode(v) for v in encoded["list"]]
        if kind == "dict":
            return {k: self.decode(v) for k, v in encoded["dict"].items()}
        if kind == "images":
            from PIL import Image

            images = []
            for item in encoded["images"]:
                with Image.open(self.folder / _safe_name(item["file"])) as image:
                    image.load()
                    images.append(image.copy())
            return ImageBatch(tuple(images), tuple(encoded.get("labels", ())))
        if kind == "dataclass":
            cls = _DATACLASSES[encoded["dataclass"]]
            return cls(**{k: self.decode(v) for k, v in encoded["fields"].items()})
        if kind == "ndarray":
            if self._arrays is None:
                from safetensors.numpy import load_file

                self._arrays = load_file(str(self.folder / "arrays.safetensors"))
            return self._arrays[encoded["ndarray"]]
        if kind == "tensor":
            if self._tensors is None:
                from safetensors.torch import load_file as load_torch

                self._tensors = load_torch(str(self.folder / "tensors.safetensors"))
            tensor = self._tensors[encoded["tensor"]]
            device = encoded.get("device", "cpu")
            return tensor if device == "cpu" else tensor.to(device)
        raise ValueError(f"unknown cache encoding {kind!r}")


def _safe_name(name: str) -> str:
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"unsafe file name in cache manifest: {name!r}")
    return name


def encode_outputs(outputs: dict[str, Any], folder: Path) -> tuple[dict[str, Any], list[str]]:
    """Write ``outputs`` into ``folder``; returns the manifest entry and the files written.

    Raises :class:`Unencodable` when some value has no safe form.
    """
    writer = _Writer(folder)
    manifest = {name: writer.encode(value, name) for name, value in outputs.items()}
    writer.finish()
    return manifest, writer.files


def decode_outputs(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    reader = _Reader(folder)
    return {name: reader.decode(encoded) for name, encoded in manifest.items()}

