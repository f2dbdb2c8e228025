"""The denoising loop, written out like a diffusers pipeline so it can be read top to bottom.

Each image has its own seed (``sfumato.image_seed(seed, index)``) and its own random generator,
for the initial noise and for any noise a scheduler adds while stepping. So an
image comes out the same whether it is made alone or inside a batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from .controlnet import control_residuals
from .loading import DiffusionModel


@dataclass
class SamplingRequest:
    """Everything one call of the loop needs."""

    states: Any  # (N, seq, width) conditioning
    pooled: Any  # (N, width') or None
    negative_states: Any  # (N, seq, width) or None: unconditional
    negative_pooled: Any
    seeds: list[int]
    steps: int
    guidance: float
    height: int
    width: int
    init_latents: Any = None  # (N, C, h, w) for image-to-image / inpainting
    strength: float = 1.0
    mask: Any = None  # (N, 1, h, w): 1 where to repaint
    controls: list[Any] = field(default_factory=list)  # controlnet.PreparedControl, applied together
    image_embeds: Any = None  # (N, k, D): an image prompt's CLIP image embeddings (IP-Adapter)
    ip_masks: Any = None  # (1, k, H, W): where each reference image acts
    # An SDXL base + refiner ensemble: the base stops at denoising_end (a fraction of the schedule) and the
    # refiner continues from those latents (init_latents, not noised again) at denoising_start.
    denoising_start: float | None = None
    denoising_end: float | None = None
    aesthetic_score: float = 6.0  # the refiner's time ids: conditional and unconditional halves
    negative_aesthetic_score: float = 2.5


def _generators(seeds: list[int]) -> list[Any]:
    import torch

    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


def _noise(shape: tuple[int, ...], generators: list[Any], device: str, dtype: Any) -> Any:
    import torch

    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device=device, dtype=dtype)


def sample_latents(model: DiffusionModel, scheduler: Any, request: SamplingRequest,
                   progress: Callable[[int, int, Any], None]) -> Any:
    """Run the denoising loop and return the final latents (scaled as the VAE expects).

    ``progress(step, total, latents)`` is called after every step.
    """
    import torch

    device, dtype = model.device, model.dtype
    unet = model.unet
    generators = _generators(request.seeds)
    shape = (unet.config.in_channels, request.height // model.vae_scale_factor, request.width // model.vae_scale_factor)

    scheduler.set_timesteps(request.steps, device=device)
    timesteps = _until_denoising_end(scheduler, scheduler.timesteps, request.denoising_end)
    noise = _noise(shape, generators, device, dtype)
    if request.init_latents is not None and request.denoising_start is not None:
        # A refiner: continue the base model's partly denoised latents where it stopped.
        timesteps = _from_denoising_start(scheduler, timesteps, request.denoising_start)
        latents = request.init_latents.to(device=device, dtype=dtype)
    elif request.init_latents is not None and request.strength < 1.0:
        # Image-to-image: start part-way, from the init image noised to that level.
        start = max(1, min(request.steps, int(round(request.steps * request.strength))))
        timesteps = timesteps[(request.steps - start) * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index((request.steps - start) * scheduler.order)
        latents = scheduler.add_noise(request.init_latents, noise, timesteps[:1].repeat(len(noise)))
    else:
        latents = noise * scheduler.init_noise_sigma

    use_guidance = request.guidance > 1.0 and request.negative_states is not None
    states = request.states.to(device=device, dtype=dtype)
    pooled = request.pooled.to(device=device, dtype=dtype) if request.pooled is not None else None
    if use_guidance:
        states = torch.cat([request.negative_states.to(device=device, dtype=dtype), states])
        if pooled is not None:
            pooled = torch.cat([request.negative_pooled.to(device=device, dtype=dtype), pooled])
    count = len(request.seeds)
    scores = ([request.negative_aesthetic_score] * count if use_guidance else []) + [request.aesthetic_score] * count
    # Class labels, or SDXL's added inputs (with the refiner's aesthetic scores).
    unet_inputs = model.unet_inputs(pooled, request.height, request.width, aesthetic_scores=scores)
    ip_inputs = _image_prompt_inputs(request, unet_inputs, use_guidance, device, dtype)

    # Stochastic schedulers draw noise while stepping: give them the per-image generators.
    step_options = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if use_guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            extra = control_residuals(request.controls, index, len(timesteps), model_input, t, states, unet_inputs,
                                      use_guidance) if request.controls else {}
            prediction = unet(model_input, t, encoder_hidden_states=states, **{**unet_inputs, **ip_inputs},
                              **extra).sample
            if use_guidance:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + request.guidance * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents, **step_options).prev_sample
            if request.mask is not None and request.init_latents is not None:
                # Keep the unmasked area on the init image's trajectory (inpainting
                # with an ordinary UNet, as diffusers' legacy inpaint pipeline does).
                if index + 1 < len(timesteps):
                    known = scheduler.add_noise(request.init_latents, noise, timesteps[index + 1:index + 2].repeat(len(noise)))
                else:
                    known = request.init_latents
                latents = request.mask * latents + (1 - request.mask) * known
            progress(index + 1, len(timesteps), latents)
    return latents


def _cutoff(scheduler: Any, fraction: float) -> int:
    """The training timestep a fraction of the denoising schedule reaches (0: pure noise, 1: clean)."""
    total = int(scheduler.config.num_train_timesteps)
    return round(total - fraction * total)


def _until_denoising_end(scheduler: Any, timesteps: Any, denoising_end: float | None) -> Any:
    """The steps before ``denoising_end`` (all of them without one), as diffusers' SDXL pipeline cuts them."""
    if denoising_end is None or denoising_end >= 1.0:
        return timesteps
    return timesteps[:int((timesteps >= _cutoff(scheduler, denoising_end)).sum().item())]


def _from_denoising_start(scheduler: Any, timesteps: Any, denoising_start: float) -> Any:
    """The steps from ``denoising_start`` on, as diffusers' SDXL image-to-image pipeline takes them."""
    steps = int((timesteps < _cutoff(scheduler, denoising_start)).sum().item())
    if scheduler.order == 2 and steps % 2 == 0:
        steps += 1  # a second-order scheduler must not start between the two halves of a step
    begin = len(timesteps) - steps
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return timesteps[begin:]


def _image_prompt_inputs(request: SamplingRequest, unet_inputs: dict[str, Any], guided: bool, device: str,
                         dtype: Any) -> dict[str, Any]:
    """The UNet's IP-Adapter inputs: image embeddings (zeros for the unconditional half) and masks."""
    import torch

    if request.image_embeds is None:
        return {}
    embeds = request.image_embeds.to(device=device, dtype=dtype)
    if guided:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])  # as diffusers: no image for the unconditional half
    inputs: dict[str, Any] = {"added_cond_kwargs": {**(unet_inputs.get("added_cond_kwargs") or {}),
                                                    "image_embeds": [embeds]}}
    if request.ip_masks is not None:
        inputs["cross_attention_kwargs"] = {"ip_adapter_masks": [request.ip_masks]}
    return inputs


def decode_latents(model: DiffusionModel, latents: Any) -> list[Any]:
    """Latents to Pillow images."""
    import torch
    from PIL import Image

    with torch.inference_mode():
        pixels = model.vae.decode(latents / model.vae.config.scaling_factor).sample
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(item) for item in array]


def encode_images(model: DiffusionModel, images: list[Any], width: int, height: int) -> Any:
    """Pillow images to scaled latents (the mean of the VAE posterior: deterministic)."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
              for im in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
    with torch.inference_mode():
        latents = model.vae.encode(pixels.to(model.device, model.dtype)).latent_dist.mean
    return latents * model.vae.config.scaling_factor


def mask_to_latent(model: DiffusionModel, masks: list[Any], width: int, height: int) -> Any:
    """White = repaint; resized to the latent grid."""
    import numpy as np
    import torch
    from PIL import Image

    size = (width // model.vae_scale_factor, height // model.vae_scale_factor)
    arrays = [np.asarray(m.convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
              for m in masks]
    return torch.from_numpy(np.stack(arrays))[:, None].to(model.device, model.dtype)


def preview_image(model: DiffusionModel, latents: Any, size: int = 64) -> Any:
    """A small picture of the first image's current latents (for live progress)."""
    image = decode_latents(model, latents[:1])[0]
    image.thumbnail((size, size))
    return image
