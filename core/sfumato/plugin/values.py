"""The value classes that travel on edges between nodes of different plugins.

They live in the engine so that an encoder from one plugin and a generator from
another agree on what they exchange. None of them imports torch: arrays may be
NumPy arrays or torch tensors, created by the plugins that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence


@dataclass(frozen=True)
class ImageBatch:
    """An ordered batch of Pillow images (one image is a batch of one).

    ``labels`` optionally names each image (a caption, a file name); nodes that
    transform images keep the order and the labels.
    """

    images: tuple[Any, ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.labels and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.images)

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else ""

    def map(self, function: Any) -> "ImageBatch":
        """Apply ``function`` to every image, keeping order and labels."""
        return ImageBatch(tuple(function(image) for image in self.images), self.labels)

    @classmethod
    def of(cls, images: Sequence[Any], labels: Sequence[str] = ()) -> "ImageBatch":
        return cls(tuple(images), tuple(labels))


@dataclass(frozen=True)
class Embedding:
    """Unit vectors for a batch of texts or images: ``vectors`` is ``(N, dimension)``.

    ``model`` and ``dimension`` let a consumer (an index, a generator) refuse an
    embedding from another encoder before anything runs.
    """

    vectors: Any
    model: str
    dimension: int
    texts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True)
class Conditioning:
    """Token-level encoder states for a generator: ``states`` is ``(N, sequence, width)``.

    ``pooled`` is the ``(N, width')`` pooled output where the encoder has one.
    ``encoder`` names the model that made it; a generator trained on another
    encoder rejects it at validation. ``family`` names the model family whose
    generator takes it (``sdxl``, ``sd3``, ``flux``; ``""`` for a single
    encoder's states), so a generator refuses another family's conditioning.
    """

    states: Any
    encoder: str
    width: int
    sequence_length: int
    pooled: Any = None
    texts: tuple[str, ...] = ()
    family: str = ""

    def __len__(self) -> int:
        return int(self.states.shape[0])


@dataclass(frozen=True)
class Latent:
    """Latents of an autoencoder: ``samples`` is ``(N, channels, height, width)``."""

    samples: Any
    autoencoder: str = ""
    scaling_factor: float = 1.0

    def __len__(self) -> int:
        return int(self.samples.shape[0])


@dataclass(frozen=True)
class RetrievedItem:
    """One search hit: the image's path, its caption and the cosine score."""

    path: str
    caption: str
    score: float


@dataclass(frozen=True)
class Retrieved:
    """Ranked hits for each query, best first: ``hits[query_index]``."""

    hits: tuple[tuple[RetrievedItem, ...], ...]
    model: str = ""


@dataclass(frozen=True)
class PromptWeights:
    """A prompt split into phrases with weights, parsed from ``(red:1.3)`` syntax.

    ``text`` is the prompt with the weighting syntax removed; each phrase is
    ``(text, weight)`` and phrases concatenate to ``text``.
    """

    text: str
    phrases: tuple[tuple[str, float], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RegionWindow:
    """A window of a latent canvas: rows ``top:top+size_y``, columns ``left:left+size_x``."""

    top: int
    left: int
    size_y: int
    size_x: int

    def crop(self, tensor: Any) -> Any:
        """The window's part of ``tensor`` (its last two dimensions are the canvas)."""
        return tensor[..., self.top:self.top + self.size_y, self.left:self.left + self.size_x]


@dataclass(frozen=True)
class Regions:
    """Where each region prompt of a conditioning acts: regional generation's plan, for any generator.

    A generator that takes regions reads its conditioning as one prompt per
    region: row 0 the background, row ``i + 1`` the object in ``boxes[i]``.
    Each box is ``(x0, y0, x1, y1)`` in canvas fractions (0..1, y growing
    downwards), so the same regions serve any image size. ``captions`` names
    each object (for messages and labels). ``background`` is the RGB colour
    the canvas keeps outside every object (``None``: the background prompt
    is denoised over the whole canvas instead, weighted ``background_weight``
    inside the objects' windows). ``object_fill`` is the share of its window
    an object covers (a window is its box divided by it). ``decode``:
    ``"windows"`` decodes each object's window on its own over the
    background, ``"canvas"`` the canvas in one piece. ``prompt`` is the text
    the regions were planned from.
    """

    boxes: tuple[tuple[float, float, float, float], ...]
    captions: tuple[str, ...] = ()
    background: tuple[int, int, int] | None = None
    object_fill: float = 0.56
    background_weight: float = 0.1
    decode: str = "windows"
    prompt: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", tuple(tuple(float(v) for v in box) for box in self.boxes))
        object.__setattr__(self, "captions", tuple(self.captions))
        for index, (x0, y0, x1, y1) in enumerate(self.boxes):
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(f"boxes[{index}] {self.boxes[index]} must satisfy 0 <= x0 < x1 <= 1 and "
                                 "0 <= y0 < y1 <= 1")
        if self.captions and len(self.captions) != len(self.boxes):
            raise ValueError(f"{len(self.captions)} captions for {len(self.boxes)} boxes")
        if not 0.0 < self.object_fill <= 1.0:
            raise ValueError(f"object_fill must be in (0, 1], got {self.object_fill}")
        if self.decode not in ("windows", "canvas"):
            raise ValueError(f"decode must be 'windows' or 'canvas', got {self.decode!r}")

    def __len__(self) -> int:
        return len(self.boxes)

    def latent_windows(self, latent_height: int, latent_width: int, unit: int) -> list[RegionWindow]:
        """One window per box on a latent canvas: the box over ``object_fill``, a multiple of ``unit``, inside it."""

        def extent(fraction: float, full: int) -> int:
            wanted = fraction * full / self.object_fill
            return max(unit, min(full - full % unit, round(wanted / unit) * unit))

        windows = []
        for x0, y0, x1, y1 in self.boxes:
            cx, cy = (x0 + x1) / 2 * latent_width, (y0 + y1) / 2 * latent_height
            size_x, size_y = extent(x1 - x0, latent_width), extent(y1 - y0, latent_height)
            left = round(min(max(cx - size_x / 2, 0), latent_width - size_x))
            top = round(min(max(cy - size_y / 2, 0), latent_height - size_y))
            windows.append(RegionWindow(top, left, size_y, size_x))
        return windows
