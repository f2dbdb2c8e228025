"""Per-image seeds: which random stream each image of a batch draws from.

Image ``index`` of a batch made with ``seed`` uses :func:`image_seed`. Image 0
keeps ``seed`` itself, so a single image is remade by its seed alone; the
others hash ``(seed, index)``. Two rules follow:

- an image is the same alone or in a batch (image 2 of seed 5 is the image
  made alone with ``image_seed(5, 2)``), and
- batches never overlap: with ``seed + index`` a seed sweep of 4-image runs
  drew seed 1's images 0-2 again as seed 0's images 1-3; hashed seeds of
  different ``(seed, index)`` pairs collide with probability about 2**-63.
"""

from __future__ import annotations

import hashlib


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` in a batch that starts at ``seed`` (``seed`` itself for image 0)."""
    if index == 0:
        return int(seed)
    digest = hashlib.sha256(f"sfumato-image-seed:{int(seed)}:{int(index)}".encode()).digest()
    # 63 bits: every torch, numpy and Python generator accepts it as a seed.
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a batch of ``count`` images starting at ``seed``."""
    return [image_seed(seed, index) for index in range(count)]
