"""Safe encodings of node outputs for the on-disk cache: JSON, PNG, safetensors.

Nothing is ever pickled. A value that no codec can store safely is simply kept
in memory only. Decoding never imports or instantiates a class named by the
file: the value classes that can be rebuilt are the fixed ones listed here and
those plugins register with a :class:`ValueCodec` (``sfumato_value_codecs``).

Values come back with their types: a tuple is stored as a tuple, not as a JSON
list (a tuple of phrases must stay hashable for the nodes that key on it).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..plugin.values import Conditioning, Embedding, ImageBatch, Latent, PromptWeights, Retrieved, RetrievedItem

_JSON_SCALARS = (str, int, float, bool, type(None))
#: Deeper values are kept in memory only (the manifest must stay readable by ``json``).
MAX_DEPTH = 100
#: Dataclasses the cache may rebuild, by name. Only these names are ever looked up.
_DATACLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (Embedding, Conditioning, Latent, PromptWeights, Retrieved, RetrievedItem)
}


class Unencodable(Exception):
    """The value holds something without a safe on-disk form."""


@dataclass(frozen=True)
class ValueCodec:
    """How the disk cache stores values of a plugin's own type (return it from ``sfumato_value_codecs``).

    ``encode`` turns a value into *parts* built only from what the cache stores
    itself: JSON values, tuples, lists, dicts with string keys, NumPy arrays,
    torch tensors, :class:`ImageBatch`, sfumato's value classes and values of
    other registered codecs. ``decode`` rebuilds the value from those parts.
    Without a codec, a plugin's values are kept in memory only.

    Attributes:
        name: a unique tag stored in cache entries (``"my_plugin.Mask"``).
        python_type: the exact class this codec handles (subclasses are not matched).
        encode: ``value -> parts``.
        decode: ``parts -> value``; raising discards the entry (it is recomputed).
    """

    name: str
    python_type: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]

    @classmethod
    def for_dataclass(cls, dataclass_type: type, name: str | None = None) -> "ValueCodec":
        """A codec storing a dataclass field by field (each field must be storable)."""
        if not dataclasses.is_dataclass(dataclass_type):
            raise TypeError(f"{dataclass_type!r} is not a dataclass")
        names = tuple(f.name for f in dataclasses.fields(dataclass_type))
        return cls(
            name or f"{dataclass_type.__module__}.{dataclass_type.__qualname__}", dataclass_type,
            lambda value: {field_name: getattr(value, field_name) for field_name in names},
            lambda parts: dataclass_type(**parts),
        )


def _is_json(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as exactly itself (so: no tuples, no subclasses)."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return not (kind is float and value != value)  # NaN is not JSON
    if kind is list:
        return all(_is_json(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    return False


class _Writer:
    """Collects arrays for one safetensors file and images as PNG files."""

    def __init__(self, folder: Path, codecs: Mapping[str, ValueCodec] | None = None) -> None:
        self.folder = folder
        self.arrays: dict[str, Any] = {}
        self.torch_arrays: dict[str, Any] = {}
        self.files: list[str] = []
        self.codecs = {codec.python_type: codec for codec in (codecs or {}).values()}

    def encode(self, value: Any, key: str, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Unencodable(f"nested deeper than {MAX_DEPTH}")
        codec = self.codecs.get(type(value))
        if codec is not None:
            return {"codec": codec.name, "value": self.encode(codec.encode(value), key, depth + 1)}
        if _is_json(value):
            return {"json": value}
        kind = type(value)
        if kind is tuple:
            return {"tuple": [self.encode(v, f"{key}.{i}", depth + 1) for i, v in enumerate(value)]}
        if kind is list:
            return {"list": [self.encode(v, f"{key}.{i}", depth + 1) for i, v in enumerate(value)]}
        if kind is dict and all(type(k) is str for k in value):
            return {"dict": {k: self.encode(v, f"{key}.{k}", depth + 1) for k, v in value.items()}}
        if isinstance(value, ImageBatch):
            names = []
            for index, image in enumerate(value.images):
                name = f"{key}.{index}.png"
                image.save(self.folder / name, format="PNG")
                self.files.append(name)
                names.append({"file": name, "mode": image.mode})
            return {"images": names, "labels": list(value.labels)}
        if type(value).__name__ in _DATACLASSES and _DATACLASSES[type(value).__name__] is type(value):
            fields = {f.name: self.encode(getattr(value, f.name), f"{key}.{f.name}", depth + 1)
                      for f in dataclasses.fields(value)}
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
    """Rebuilds values from a manifest and the entry's files, given as already verified bytes."""

    def __init__(self, files: Mapping[str, bytes], codecs: Mapping[str, ValueCodec] | None = None) -> None:
        self.files = files
        self.codecs = codecs or {}
        self._arrays: dict[str, Any] | None = None
        self._tensors: dict[str, Any] | None = None

    def _file(self, name: str) -> bytes:
        return self.files[_safe_name(name)]

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
        if kind == "codec":
            codec = self.codecs.get(encoded["codec"])
            if codec is None:  # its plugin is gone or disabled: recompute
                raise ValueError(f"no codec {encoded['codec']!r} is registered")
            return codec.decode(self.decode(encoded["value"]))
        if kind == "images":
            from PIL import Image

            images = []
            for item in encoded["images"]:
                with Image.open(io.BytesIO(self._file(item["file"])), formats=["PNG"]) as image:
                    image.load()
                    images.append(image.copy())
            return ImageBatch(tuple(images), tuple(encoded.get("labels", ())))
        if kind == "dataclass":
            cls = _DATACLASSES[encoded["dataclass"]]
            return cls(**{k: self.decode(v) for k, v in encoded["fields"].items()})
        if kind == "ndarray":
            if self._arrays is None:
                from safetensors.numpy import load

                self._arrays = load(self._file("arrays.safetensors"))
            return self._arrays[encoded["ndarray"]]
        if kind == "tensor":
            if self._tensors is None:
                from safetensors.torch import load as load_torch

                self._tensors = load_torch(self._file("tensors.safetensors"))
            tensor = self._tensors[encoded["tensor"]]
            device = encoded.get("device", "cpu")
            return tensor if device == "cpu" else tensor.to(device)
        raise ValueError(f"unknown cache encoding {kind!r}")


def _safe_name(name: str) -> str:
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"unsafe file name in cache manifest: {name!r}")
    return name


def encode_outputs(outputs: dict[str, Any], folder: Path, codecs: Mapping[str, ValueCodec] | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    """Write ``outputs`` into ``folder``; returns the manifest entry and the files written.

    ``codecs`` are the plugins' codecs by name. Raises :class:`Unencodable`
    when some value has no safe form.
    """
    writer = _Writer(folder, codecs)
    manifest = {name: writer.encode(value, name) for name, value in outputs.items()}
    writer.finish()
    return manifest, writer.files


def decode_outputs(manifest: dict[str, Any], files: Mapping[str, bytes],
                   codecs: Mapping[str, ValueCodec] | None = None) -> dict[str, Any]:
    """Rebuild outputs from a manifest entry and the entry's files (name -> verified bytes)."""
    reader = _Reader(files, codecs)
    return {name: reader.decode(encoded) for name, encoded in manifest.items()}

