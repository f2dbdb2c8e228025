"""Regional generation in ``diffusion.generate``: one prompt per region, denoised in its window, fused each step.

``diffusion.generate(layout=...)`` takes :class:`sfumato.Regions` (the core's
plain value: boxes in canvas fractions, a background) and a conditioning with
one prompt per region, background first. This is MultiDiffusion (Bar-Tal et
al., 2023) with windows: at every step each object's window is cropped from
the canvas latent and passed through the UNet with that object's prompt
(with classifier-free guidance); the predictions are pasted back and averaged
where windows overlap, and one scheduler step moves the whole canvas. Outside
every window the canvas follows a known background latent (the flat
background colour encoded by the VAE, noised to the current level), as
inpainting does with an ordinary UNet; without a background colour the
background prompt is one more region over the whole canvas, weighted low.

A window is larger than its object's box: a model draws an object over part
of its frame (``Regions.object_fill``), so the window is the box divided by
that share, rounded to what the UNet downsamples, and moved inside the canvas.

The UNet's inputs come from :meth:`DiffusionModel.unet_inputs`, so any UNet
the plugin loads works: the zoo's (a pooled class embedding), SD 1.x/2.x and
SDXL (pooled embeddings with time ids for each window's size). The
``layout`` plugin's ``layout.generate`` runs the same loop; for the same
layout, conditioning, seed and settings both make the same image
(``tests/test_layout_direct.py`` holds them to it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfumato import Conditioning, ImageBatch, Latent, Regions, RegionWindow, image_seeds

from .loading import DiffusionModel


def flat_latent(vae: Any, rgb: tuple[int, int, int], height: int, width: int) -> Any:
    """The VAE latent (scaled) of a plain background of colour ``rgb``, ``(C, h, w)``.

    A perfectly flat image is out of distribution for a VAE with group
    normalisation (zero variance), and small VAEs encode it to the wrong
    colour. So a contrasting square is drawn in the middle, the image encoded,
    and the latent's border (plain background) spread over the canvas, per channel.
    """
    import torch

    pixels = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).repeat(1, height, width)
    contrast = 12.0 if sum(rgb) > 380 else 245.0
    pixels[:, height * 3 // 8:height * 5 // 8, width * 3 // 8:width * 5 // 8] = contrast
    with torch.inference_mode():
        latent = vae.encode((pixels / 127.5 - 1.0)[None].to(vae.device, vae.dtype)).latent_dist.mean[0]
    ring = torch.cat([latent[:, 0], latent[:, -1], latent[:, :, 0], latent[:, :, -1]], dim=1)
    return ring.median(dim=1).values.view(-1, 1, 1).expand_as(latent).clone() * vae.config.scaling_factor


@dataclass
class RegionalRequest:
    """One image's regional loop: conditioning rows (background first), windows, seed, size."""

    regions: Regions
    windows: list[RegionWindow]
    states: Any  # (regions + 1, seq, width)
    pooled: Any  # (regions + 1, width') or None
    negative_states: Any  # (1, seq, width) or None: no guidance
    negative_pooled: Any
    background_latent: Any  # (C, h, w) or None: the background prompt covers the canvas
    seed: int
    steps: int
    guidance: float
    height: int
    width: int


def _predict(model: DiffusionModel, latents: Any, t: Any, states: Any, pooled: Any, request: RegionalRequest,
             negative: tuple[Any, Any], scheduler: Any) -> Any:
    """Guided noise prediction for a batch of crops, each with its own conditioning row."""
    import torch

    count = latents.shape[0]
    negative_states, negative_pooled = negative
    guided = request.guidance > 1.0 and negative_states is not None
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
    if guided:
        states = torch.cat([negative_states.expand(count, -1, -1), states])
        if pooled is not None:
            pooled = torch.cat([negative_pooled.expand(count, -1), pooled])
    factor = model.vae_scale_factor
    inputs = model.unet_inputs(pooled, latents.shape[2] * factor, latents.shape[3] * factor)
    prediction = model.unet(model_input, t, encoder_hidden_states=states, **inputs).sample
    if guided:
        unconditional, conditional = prediction.chunk(2)
        prediction = unconditional + request.guidance * (conditional - unconditional)
    return prediction


def regional_latents(model: DiffusionModel, scheduler: Any, request: RegionalRequest,
                     progress: Callable[[int, int], None] = lambda step, total: None) -> Any:
    """Run the fused regional loop; returns ``(1, C, h, w)`` latents scaled as the VAE expects."""
    import torch

    device, dtype = model.device, model.dtype
    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    factor = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, request.height // factor, request.width // factor)
    noise = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    scheduler.set_timesteps(request.steps, device=device)
    timesteps = scheduler.timesteps
    latents = noise * scheduler.init_noise_sigma

    def moved(tensor: Any) -> Any:
        return None if tensor is None else tensor.to(device=device, dtype=dtype)

    states, pooled = moved(request.states), moved(request.pooled)
    negative = (moved(request.negative_states), moved(request.negative_pooled))
    coverage = torch.zeros(shape[2:], device=device, dtype=dtype)
    for window in request.windows:
        window.crop(coverage).add_(1.0)
    covered = (coverage > 0).to(dtype)
    known = moved(request.background_latent)
    if known is not None:
        known = known.unsqueeze(0)
    step_options = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    # Windows of one size run as one UNet batch.
    by_size: dict[tuple[int, int], list[int]] = {}
    for number, window in enumerate(request.windows):
        by_size.setdefault((window.size_y, window.size_x), []).append(number)

    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            fused = torch.zeros_like(latents)
            weights = torch.zeros(shape[2:], device=device, dtype=dtype)
            if known is None:
                # The background prompt over the whole canvas, weighted low so objects win inside their windows.
                whole = _predict(model, latents, t, states[:1], None if pooled is None else pooled[:1], request,
                                 negative, scheduler)
                fused += request.regions.background_weight * whole
                weights += request.regions.background_weight
            for numbers in by_size.values():
                crops = torch.cat([request.windows[n].crop(latents) for n in numbers])
                rows = [n + 1 for n in numbers]
                prediction = _predict(model, crops, t, states[rows], None if pooled is None else pooled[rows],
                                      request, negative, scheduler)
                for n, part in zip(numbers, prediction):
                    request.windows[n].crop(fused)[0] += part
                    request.windows[n].crop(weights).add_(1.0)
            latents = scheduler.step(fused / weights.clamp(min=1e-6), t, latents, **step_options).prev_sample
            if known is not None:
                target = scheduler.add_noise(known, noise, timesteps[index + 1:index + 2]) \
                    if index + 1 < len(timesteps) else known
                latents = covered * latents + (1 - covered) * target
            progress(index + 1, len(timesteps))
    return latents


def _to_array(vae: Any, latents: Any) -> Any:
    """Latents to an ``(H, W, 3)`` float array in 0..255."""
    import torch

    with torch.inference_mode():
        pixels = vae.decode(latents / vae.config.scaling_factor).sample
    return ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy()


def decode_regions(model: DiffusionModel, latents: Any, request: RegionalRequest) -> Any:
    """Decode the canvas, or each window on its own pasted over the background (averaged where they overlap)."""
    import numpy as np
    from PIL import Image

    vae, factor = model.vae, model.vae_scale_factor
    if request.regions.decode == "canvas":
        return Image.fromarray(_to_array(vae, latents).round().astype(np.uint8))
    height, width = latents.shape[2] * factor, latents.shape[3] * factor
    base = np.empty((height, width, 3), dtype=np.float32)
    base[:] = request.regions.background if request.regions.background is not None else _to_array(vae, latents)
    total = np.zeros((height, width, 3), dtype=np.float32)
    weight = np.zeros((height, width, 1), dtype=np.float32)
    for window in request.windows:
        top, left = window.top * factor, window.left * factor
        rows, cols = slice(top, top + window.size_y * factor), slice(left, left + window.size_x * factor)
        total[rows, cols] += _to_array(vae, window.crop(latents))
        weight[rows, cols] += 1.0
    image = np.where(weight > 0, total / np.maximum(weight, 1.0), base)
    return Image.fromarray(image.clip(0, 255).round().astype(np.uint8))


def check_regions(regions: Regions, conditioning: Conditioning, model: DiffusionModel, width: int,
                  height: int) -> None:
    """Refuse regions the conditioning or the model cannot serve, naming the input."""
    if not regions.boxes:
        raise ValueError("layout: no regions to generate")
    if len(conditioning) != len(regions) + 1:
        raise ValueError(f"conditioning: {len(conditioning)} prompts for a layout of {len(regions)} regions; give "
                         f"{len(regions) + 1} (the background, then each object, as layout.prompts makes)")
    unit = model.vae_scale_factor * 2 ** (len(model.unet.config.block_out_channels) - 1)
    if width % unit or height % unit:
        raise ValueError(f"width/height: {width}x{height} must be multiples of {unit} for regional generation "
                         f"with model {model.name!r}")


def generate_regions(model: DiffusionModel, make_scheduler: Callable[[], Any], regions: Regions,
                     conditioning: Conditioning, negative: Conditioning | None, *, steps: int, guidance: float,
                     width: int, height: int, batch_size: int, seed: int,
                     progress: Callable[[int, int], None]) -> dict[str, Any]:
    """``diffusion.generate`` with a layout: ``batch_size`` images, each by the fused regional loop.

    ``conditioning`` is already checked against the model; ``negative`` has
    one row (or is ``None``: no guidance). ``make_scheduler()`` returns a
    fresh scheduler for each image. Returns the node's outputs.
    """
    import torch

    check_regions(regions, conditioning, model, width, height)
    factor = model.vae_scale_factor
    unit = 2 ** (len(model.unet.config.block_out_channels) - 1)
    windows = regions.latent_windows(height // factor, width // factor, unit)
    known = flat_latent(model.vae, regions.background, height, width) if regions.background is not None else None
    images, latents = [], []
    for index, image_seed in enumerate(image_seeds(seed, batch_size)):
        request = RegionalRequest(regions, windows, conditioning.states, conditioning.pooled,
                                  None if negative is None else negative.states[:1],
                                  None if negative is None or negative.pooled is None else negative.pooled[:1],
                                  known, image_seed, steps, guidance, height, width)

        def report(step: int, total: int, done: int = index * steps) -> None:
            progress(done + step, batch_size * total)

        result = regional_latents(model, make_scheduler(), request, report)
        images.append(decode_regions(model, result, request))
        latents.append(result)
    labels = (regions.prompt,) * batch_size if regions.prompt else ()
    return {"images": ImageBatch(tuple(images), labels),
            "latent": Latent(torch.cat(latents).cpu(), model.name, float(model.vae.config.scaling_factor))}
