"""Control-image preprocessors that work offline: edge maps with scikit-image (no downloaded detector)."""

from __future__ import annotations

from typing import Annotated, Literal

from sfumato import Field, ImageBatch, node

EdgeMethod = Literal["canny", "sobel", "scharr", "prewitt", "roberts"]


@node("control.edges", category="generate", output="images")
def edges(
    images: ImageBatch,
    method: EdgeMethod = "canny",
    sigma: Annotated[float, Field(ge=0, le=20)] = 1.0,
    low: Annotated[float, Field(ge=0, le=1)] = 0.1,
    high: Annotated[float, Field(ge=0, le=1)] = 0.2,
    invert: bool = False,
) -> ImageBatch:
    """Edge maps for a ControlNet: white edges on black (what canny ControlNets are trained on).

    ``canny`` gives thin binary edges; ``sobel``, ``scharr``, ``prewitt`` and
    ``roberts`` give soft gradient magnitudes (scaled so the strongest edge of
    each image is white).

    Args:
        images: the images to trace.
        method: the edge detector.
        sigma: canny only: Gaussian smoothing before tracing (larger: fewer, smoother edges).
        low: canny only: the weak-edge threshold (on intensities in 0..1).
        high: canny only: the strong-edge threshold (on intensities in 0..1).
        invert: black edges on white.
    """
    import numpy as np
    from PIL import Image
    from skimage import feature, filters

    if method == "canny" and low > high:
        raise ValueError(f"low ({low}) must not be above high ({high})")

    def trace(image: Image.Image) -> Image.Image:
        gray = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        if method == "canny":
            edge = feature.canny(gray, sigma=sigma, low_threshold=low, high_threshold=high).astype(np.float64)
        else:
            edge = getattr(filters, method)(gray)
            peak = float(edge.max())
            edge = edge / peak if peak > 0 else edge
        if invert:
            edge = 1.0 - edge
        return Image.fromarray((edge * 255).round().astype(np.uint8)).convert("RGB")

    return images.map(trace)
