"""Regional generation: every object of a layout denoised with its own prompt, fused each step.

This is MultiDiffusion (Bar-Tal et al., 2023) with masks, written out like a
diffusers pipeline. The canvas latent is one tensor. At every step, each
region's window is cropped from it and passed through the UNet with that
region's conditioning (with classifier-free guidance); the noise predictions
are pasted back and averaged where windows overlap; one scheduler step moves
the whole canvas. Outside every window the canvas follows a known background
latent (a flat background colour encoded by the VAE, noised to the current
level), as inpainting does with an ordinary UNet; or, with a background
prompt, the whole canvas is one more region, under the objects.

A window is larger than its object's box: a model trained on single-object
pictures draws its object over part of the frame (``object_fill``), so the
window is the box divided by that fraction, rounded to what the UNet can
downsample, and moved inside the canvas.

Nothing here knows a model family: any ``UNet2DConditionModel`` with its VAE works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfumato import Regions, RegionWindow

from .layout import Layout


def latent_windows(layout: Layout, latent_height: int, latent_width: int, unit: int,
                   object_fill: float) -> list[RegionWindow]:
    """One latent window per object: its box divided by ``object_fill``, a multiple of ``unit``, inside the canvas."""
    regions = Regions(tuple(obj.box for obj in layout.objects), object_fill=object_fill)
    return regions.latent_windows(latent_height, latent_width, unit)


@dataclass
class RegionalRequest:
    """Everything one call of the regional loop needs.

    ``states``/``pooled`` hold one row per region prompt: row 0 is the
    background, rows 1.. the layout's objects in order. ``negative_*`` hold one
    row (the unconditional input). ``background_latent`` is ``(C, h, w)``, the
    clean latent the canvas outside the windows follows; ``None`` makes row 0
    a whole-canvas region instead.
    """

    windows: list[RegionWindow]
    states: Any
    pooled: Any
    negative_states: Any
    negative_pooled: Any
    background_latent: Any
    seed: int
    steps: int
    guidance: float
    latent_height: int
    latent_width: int
    background_weight: float = 0.1


def _predict(unet: Any, latents: Any, t: Any, states: Any, pooled: Any, negative_states: Any,
             negative_pooled: Any, guidance: float, scheduler: Any) -> Any:
    """Guided noise prediction for a batch of crops, each with its own conditioning row."""
    import torch

    count = latents.shape[0]
    use_guidance = guidance > 1.0
    model_input = torch.cat([latents] * 2) if use_guidance else latents
    model_input = scheduler.scale_model_input(model_input, t)
    cond = states
    cond_pooled = pooled
    if use_guidance:
        cond = torch.cat([negative_states.expand(count, -1, -1), states])
        if pooled is not None:
            cond_pooled = torch.cat([negative_pooled.expand(count, -1), pooled])
    class_labels = cond_pooled if unet.config.class_embed_type == "projection" else None
    prediction = unet(model_input, t, encoder_hidden_states=cond, class_labels=class_labels).sample
    if use_guidance:
        unconditional, conditional = prediction.chunk(2)
        prediction = unconditional + guidance * (conditional - unconditional)
    return prediction


def regional_latents(unet: Any, scheduler: Any, request: RegionalRequest,
                     progress: Callable[[int, int], None] = lambda step, total: None) -> Any:
    """Run the fused regional loop; returns ``(1, C, h, w)`` latents scaled as the VAE expects."""
    import torch

    device, dtype = unet.device, unet.dtype
    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    shape = (1, unet.config.in_channels, request.latent_height, request.latent_width)
    noise = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    scheduler.set_timesteps(request.steps, device=device)
    timesteps = scheduler.timesteps
    latents = noise * scheduler.init_noise_sigma
    states = request.states.to(device=device, dtype=dtype)
    pooled = request.pooled.to(device=device, dtype=dtype) if request.pooled is not None else None
    negative_states = request.negative_states.to(device=device, dtype=dtype)
    negative_pooled = request.negative_pooled.to(device=device, dtype=dtype) \
        if request.negative_pooled is not None else None

    # Where the windows are: their weights sum per latent pixel; 0 outside every window.
    coverage = torch.zeros(shape[2:], device=device, dtype=dtype)
    for window in request.windows:
        window.crop(coverage).add_(1.0)
    covered = (coverage > 0).to(dtype)
    known = request.background_latent
    if known is not None:
        known = known.to(device=device, dtype=dtype).unsqueeze(0)
    step_options = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}

    def row(tensor: Any, index: int) -> Any:
        return None if tensor is None else tensor[index:index + 1]

    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            fused = torch.zeros_like(latents)
            weights = torch.zeros(shape[2:], device=device, dtype=dtype)
            if known is None:
                # The background prompt over the whole canvas, weighted low so objects win inside their windows.
                whole = _predict(unet, latents, t, row(states, 0), row(pooled, 0), negative_states,
                                 negative_pooled, request.guidance, scheduler)
                fused += request.background_weight * whole
                weights += request.background_weight
            # Windows of one size run as one UNet batch.
            by_size: dict[tuple[int, int], list[int]] = {}
            for number, window in enumerate(request.windows):
                by_size.setdefault((window.size_y, window.size_x), []).append(number)
            for numbers in by_size.values():
                crops = torch.cat([request.windows[n].crop(latents) for n in numbers])
                rows = [n + 1 for n in numbers]
                prediction = _predict(unet, crops, t, states[rows], pooled[rows] if pooled is not None else None,
                                      negative_states, negative_pooled, request.guidance, scheduler)
                for n, part in zip(numbers, prediction):
                    request.windows[n].crop(fused)[0] += part
                    request.windows[n].crop(weights).add_(1.0)
            prediction = fused / weights.clamp(min=1e-6)
            latents = scheduler.step(prediction, t, latents, **step_options).prev_sample
            if known is not None:
                if index + 1 < len(timesteps):
                    target = scheduler.add_noise(known, noise, timesteps[index + 1:index + 2])
                else:
                    target = known
                latents = covered * latents + (1 - covered) * target
            progress(index + 1, len(timesteps))
    return latents
