"""The SDXL refiner: a second model that finishes the base model's partly denoised latents.

SDXL's "ensemble of expert denoisers": the base model denoises the first part
of the schedule (``diffusion.generate`` with ``denoising_end=0.8``) and hands
its latents, still noisy, to the refiner, which denoises the rest from
``denoising_start=0.8`` on, conditioned on its own text encoder (CLIP-G,
``encode.sdxl`` of the refiner folder) and on time ids that carry an
aesthetic score instead of a target size — what diffusers'
``StableDiffusionXLImg2ImgPipeline`` does with ``denoising_start``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from sfumato import (
    Conditioning,
    Field,
    ImageBatch,
    Latent,
    RunContext,
    ValidationContext,
    image_seeds,
    node,
)

from .families import SDXL, expected_conditioning
from .loading import load_diffusion_model
from .sampling import SamplingRequest, decode_latents, sample_latents
from .schedulers import SCHEDULER_NAMES, make_scheduler

SchedulerName = Literal[SCHEDULER_NAMES]  # type: ignore[valid-type]


def describe_stopped_latent(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """``diffusion.generate``'s latent says where its schedule stopped (``denoising_end``), when that is known."""
    if "denoising_end" in context.given and "denoising_end" not in inputs:
        return {}  # linked from another node: known only when the graph runs
    return {"latent": {"denoising_end": float(inputs.get("denoising_end", 1.0))}}


def _expected(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """The refiner's conditioning: SDXL, as wide as its UNet's cross-attention (CLIP-G alone: 1280); its
    latent stopped where the refiner starts (a base run to the end would be denoised twice over)."""
    latent = {} if "denoising_start" in context.given and "denoising_start" not in inputs else \
        {"latent": {"denoising_end": float(inputs.get("denoising_start", 0.8))}}
    folder = context.model_folder(inputs["model"]) if inputs.get("model") else None
    if folder is None:
        return {"conditioning": {"family": SDXL}, "negative": {"family": SDXL}, **latent}
    expected = expected_conditioning(folder)
    if expected.get("family") != SDXL:
        context.problem(f"model {inputs['model']!r} is not an SDXL model (its UNet takes no text and time "
                        "embeddings): sdxl.refine takes an SDXL refiner (or base) folder", "model")
        return latent
    return {"conditioning": expected, "negative": expected, **latent}


def _matched(conditioning: Conditioning, count: int, role: str) -> tuple[Any, Any]:
    """States and pooled embeddings for ``count`` latents: one prompt for all, or as many as the base had."""
    if count % len(conditioning):
        raise ValueError(f"{role} has {len(conditioning)} prompts for {count} latents; give 1, or one per "
                         "prompt of the base model's conditioning")
    times = count // len(conditioning)
    return (conditioning.states.repeat_interleave(times, dim=0),
            conditioning.pooled.repeat_interleave(times, dim=0))


@node("sdxl.refine", category="generate", outputs={"images": ImageBatch, "latent": Latent},
      expect_inputs=_expected)
def refine(
    latent: Latent,
    conditioning: Conditioning,
    model: str,
    context: RunContext,
    negative: Conditioning | None = None,
    steps: Annotated[int, Field(ge=1, le=1000)] = 30,
    denoising_start: Annotated[float, Field(gt=0, lt=1)] = 0.8,
    guidance: Annotated[float, Field(ge=0, le=50)] = 5.0,
    scheduler: SchedulerName = "euler",
    aesthetic_score: Annotated[float, Field(ge=0, le=10)] = 6.0,
    negative_aesthetic_score: Annotated[float, Field(ge=0, le=10)] = 2.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Finish an SDXL base model's latents with the SDXL refiner (or any SDXL model).

    Link ``latent`` from ``diffusion.generate`` run with ``denoising_end``
    (0.8 is the usual split) and set ``denoising_start`` to the same value:
    the base denoises the first 80% of the schedule, the refiner the rest.
    ``steps`` counts the whole schedule, as in diffusers, so the refiner runs
    about ``steps * (1 - denoising_start)`` of them.

    Args:
        latent: the base model's latents, stopped at ``denoising_end``.
        conditioning: the prompts encoded by ``encode.sdxl`` of the refiner folder (its CLIP-G alone).
        model: an SDXL refiner folder (``unet/``, ``vae/``, ``scheduler/``, ``text_encoder_2/``...), or a
            single-file refiner checkpoint (configs from the model library's refiner folder).
        negative: what to steer away from (``encode.sdxl`` of the refiner folder); default zeros.
        steps: steps of the whole schedule (the refiner runs the part after ``denoising_start``).
        denoising_start: where in the schedule the refiner takes over (the base's ``denoising_end``).
        guidance: classifier-free guidance scale (1 turns guidance off).
        scheduler: the sampler.
        aesthetic_score: the aesthetic score the refiner is conditioned on (its time ids).
        negative_aesthetic_score: the score of the unconditional half of guidance.
        seed: the first image's seed (stochastic samplers draw noise while stepping).
    """
    import torch

    refiner = load_diffusion_model(context, model)
    if refiner.family != SDXL:
        raise ValueError(f"model {model!r} is not an SDXL model: sdxl.refine takes an SDXL refiner folder")
    width = int(refiner.unet.config.cross_attention_dim)
    for role, given in (("conditioning", conditioning), ("negative", negative)):
        if given is not None and (given.family != SDXL or given.width != width or given.pooled is None):
            raise ValueError(f"{role} is {given.family or 'sd'} conditioning of width {given.width} (encoder "
                             f"{given.encoder!r}), but refiner {model!r} takes SDXL conditioning of width {width}: "
                             f"encode the prompts with encode.sdxl (model={model!r})")
    samples = latent.samples
    if int(samples.shape[1]) != int(refiner.unet.config.in_channels):
        raise ValueError(f"latent has {samples.shape[1]} channels, but refiner {model!r} takes "
                         f"{refiner.unet.config.in_channels}: link the latent of an SDXL diffusion.generate")
    count = len(latent)
    states, pooled = _matched(conditioning, count, "conditioning")
    if negative is not None:
        negative_states, negative_pooled = _matched(negative, count, "negative")
    elif guidance > 1.0:  # as SDXL's pipelines do by default for an empty negative prompt
        negative_states, negative_pooled = torch.zeros_like(states), torch.zeros_like(pooled)
    else:
        negative_states = negative_pooled = None
    factor = refiner.vae_scale_factor
    request = SamplingRequest(states, pooled, negative_states, negative_pooled, image_seeds(seed, count), steps,
                              guidance, int(samples.shape[2]) * factor, int(samples.shape[3]) * factor,
                              init_latents=samples, denoising_start=denoising_start,
                              aesthetic_score=aesthetic_score, negative_aesthetic_score=negative_aesthetic_score)
    sampler = make_scheduler(scheduler, refiner.scheduler_config)
    latents = sample_latents(refiner, sampler, request, lambda step, total, _: context.progress(step, total))
    labels = tuple(text for text in conditioning.texts for _ in range(count // len(conditioning)))
    return {"images": ImageBatch(tuple(decode_latents(refiner, latents)), labels),
            "latent": Latent(latents.cpu(), refiner.name, float(refiner.vae.config.scaling_factor))}
