"""Flow-matching transformers: Flux.1 and SD3/3.5.

Flux.1 is conditioned on T5 states and a CLIP pooled vector; SD3 on CLIP-L,
CLIP-G and T5 states in one sequence and both CLIPs' pooled projections.

``flux.generate`` runs a Flux pipeline folder (``transformer/``, ``vae/``,
``scheduler/``) from ``encode.flux`` conditioning through diffusers'
``FluxPipeline`` (the loop, latent packing and rotary ids are diffusers'
own), with one random generator per image so each image's seed is its own.
Guidance-distilled models (FLUX.1-dev) take ``guidance`` as an input of the
transformer; ``true_guidance`` > 1 with a ``negative`` runs real classifier-free guidance.
``sd3.generate`` does the same with ``StableDiffusion3Pipeline``.

Both load a diffusers folder or a single ``.safetensors`` checkpoint (configs,
and the VAE when the file has none, from the model library's folder of that
family: ``checkpoints.load_transformer_checkpoint``), and apply LoRA stacks to
the transformer (``lora.lora_applied``).
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from sfumato import (
    Conditioning,
    Field,
    ImageBatch,
    ModelNotFoundError,
    RunContext,
    ValidationContext,
    image_seeds,
    node,
)

from .lora import LoraStack, lora_applied, note_lora_files

FLUX = "flux"
SD3 = "sd3"
#: Family -> (diffusers pipeline class, transformer class, text-encoder arguments set to None, encoder node).
PIPELINES = {
    FLUX: ("FluxPipeline", "FluxTransformer2DModel", ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
           "encode.flux"),
    SD3: ("StableDiffusion3Pipeline", "SD3Transformer2DModel",
          ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3"), "encode.sd3"),
}


@dataclass
class FluxModel:
    """The loaded pipeline (without its text encoders: conditioning comes from ``encode.flux``)."""

    name: str
    pipeline: Any
    joint_width: int
    pooled_width: int
    family: str = FLUX


def _locate(context: RunContext, name: str, family: str) -> tuple[Path, Path | None]:
    """``(pipeline folder, None)`` for a folder; ``(config folder, file)`` for a single-file checkpoint."""
    from .families import local_hub_snapshot

    path = context.models.resolve(name)
    if isinstance(path, str):
        path = local_hub_snapshot(path)
    if path.is_file():
        return _single_file_config(name, path, family), path
    missing = [part for part in ("transformer", "vae", "scheduler") if not (path / part).is_dir()]
    if missing:
        label = "Flux" if family == FLUX else "SD3"
        raise ModelNotFoundError(f"model {name!r} at {path} is not a {label} folder: missing {', '.join(missing)}/ "
                                 f"(expected transformer/, vae/ and scheduler/ as {PIPELINES[family][0]}"
                                 ".save_pretrained writes), nor a single .safetensors checkpoint")
    return path, None


def _single_file_config(name: str, path: Path, family: str) -> Path:
    """The library folder whose configs (and VAE, for files without one) a single ``family`` file loads with."""
    from .library import ENV_FOLDERS, config_folder_for
    from .singlefile import require_safetensors, transformer_checkpoint_family

    require_safetensors(name, path)
    transformer_checkpoint_family(path, family)  # SfumatoError naming what the file is, when it is not one
    config = config_folder_for(family)
    if config is None:
        raise ModelNotFoundError(
            f"model {name!r} is a single-file {family} checkpoint; its configs (and its VAE, when the file has "
            f"none) come from a diffusers {family} folder in the model library, and there is none: add one (its "
            f"transformer weights are not read) to a folder in {ENV_FOLDERS}")
    return config


def load_flux(context: RunContext, name: str, family: str = FLUX) -> FluxModel:
    """The Flux (or SD3) model ``name`` (a folder or a single file), loaded once per process."""
    from sfumato import torch_dtype

    preparing = time.perf_counter()
    path, single_file = _locate(context, name, family)
    dtype = torch_dtype(context.dtype)

    def load() -> FluxModel:
        import diffusers
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        pipeline_class, transformer_class, absent, _ = PIPELINES[family]
        low_memory = importlib.util.find_spec("accelerate") is not None
        parts: dict[str, Any] = {}
        if single_file is not None:
            from .checkpoints import load_transformer_checkpoint

            parts = load_transformer_checkpoint(single_file, path, family, dtype)
        transformer = parts.get("transformer") or getattr(diffusers, transformer_class).from_pretrained(
            path, subfolder="transformer", torch_dtype=dtype, low_cpu_mem_usage=low_memory)
        vae = parts.get("vae") or AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype,
                                                                low_cpu_mem_usage=low_memory)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler")
        pipeline = getattr(diffusers, pipeline_class)(scheduler=scheduler, vae=vae.eval(), transformer=transformer.eval(),
                                                      **dict.fromkeys(absent)).to(context.device)
        pipeline.set_progress_bar_config(disable=True)
        return FluxModel(name, pipeline, int(transformer.config.joint_attention_dim),
                         int(transformer.config.pooled_projection_dim), family)

    return context.models.get(f"{family}:{name}", context.device, context.dtype, load, preparing_since=preparing)


def _expected(inputs: dict[str, Any], context: ValidationContext, family: str = FLUX) -> dict[str, dict[str, Any]]:
    """A transformer takes its family's conditioning as wide as its joint attention (from its config, no torch)."""
    folder = context.model_folder(inputs["model"]) if inputs.get("model") else None
    expected: dict[str, Any] = {"family": family}
    if folder is None and inputs.get("model"):
        width = _check_single_file(str(inputs["model"]), context, family)
        if width:
            expected["width"] = width
    config = folder / "transformer" / "config.json" if folder is not None else None
    if config is not None and config.exists():
        expected["width"] = json.loads(config.read_text()).get("joint_attention_dim")
    # A LoRA whose keys name another architecture's blocks (a UNet's, the other transformer's) is refused.
    return {"conditioning": expected, "negative": expected, "loras": {"family": family}}


def _check_single_file(model: str, context: ValidationContext, family: str) -> int:
    """A single file given as ``model`` must be a ``family`` checkpoint (from its keys, no weights read);
    returns the text width its transformer takes (0: not a file, or not one)."""
    from .families import single_file_of
    from .singlefile import conditioning_width, read_header, transformer_checkpoint_family

    file = single_file_of(model, context.model_sources)
    if file is None:
        return 0
    try:
        transformer_checkpoint_family(file, family)
    except Exception as error:  # noqa: BLE001 - SfumatoError from the file's keys, reported on the input
        context.problem(str(error), "model")
        return 0
    return conditioning_width(read_header(file))


def _check(model: FluxModel, conditioning: Conditioning, role: str) -> None:
    if conditioning.family != model.family:
        raise ValueError(f"{role} is {conditioning.family or 'sd'} conditioning (encoder {conditioning.encoder!r}), "
                         f"but model {model.name!r} is a {model.family} model: encode its prompts with "
                         f"{PIPELINES[model.family][3]}")
    if conditioning.width != model.joint_width or conditioning.pooled is None \
            or int(conditioning.pooled.shape[-1]) != model.pooled_width:
        raise ValueError(f"{role} from {conditioning.encoder!r} has width {conditioning.width}, but model "
                         f"{model.name!r} expects T5 states of {model.joint_width} and a pooled {model.pooled_width}")


@node("flux.generate", category="generate", output="images", expect_inputs=_expected)
def flux_generate(
    conditioning: Conditioning,
    model: str,
    context: RunContext,
    steps: Annotated[int, Field(ge=1, le=1000)] = 28,
    guidance: Annotated[float, Field(ge=0, le=50)] = 3.5,
    negative: Conditioning | None = None,
    true_guidance: Annotated[float, Field(ge=1, le=50)] = 1.0,
    width: Annotated[int, Field(ge=0, le=4096, multiple_of=16)] = 0,
    height: Annotated[int, Field(ge=0, le=4096, multiple_of=16)] = 0,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: int = 0,
    loras: LoraStack | None = None,
) -> ImageBatch:
    """Generate images with a Flux.1 model (flow matching) from ``encode.flux`` conditioning.

    Each image has its own seed, ``sfumato.image_seed(seed, index)``, as with
    ``diffusion.generate``.

    Args:
        conditioning: prompts encoded by ``encode.flux``.
        model: a Flux pipeline folder (``transformer/``, ``vae/``, ``scheduler/``), or a single-file Flux
            checkpoint (configs, and the VAE when the file has none, from the model library's Flux folder).
        steps: sampling steps (FLUX.1-schnell: 4).
        guidance: the distilled guidance of FLUX.1-dev (ignored by models without guidance embeddings).
        negative: with ``true_guidance`` > 1: what to steer away from (from ``encode.flux``).
        true_guidance: real classifier-free guidance (1: off, the usual for Flux).
        width: image width; 0: the VAE's sample size.
        height: image height; 0: the VAE's sample size.
        batch_size: images per prompt.
        seed: the first image's seed.
        loras: LoRAs on the transformer (from ``diffusion.lora``); none: the model's own weights.
    """
    import torch

    flux = load_flux(context, model)
    note_lora_files(context, loras)  # the run used them: PNG metadata records their hashes
    _check(flux, conditioning, "conditioning")
    if negative is not None:
        _check(flux, negative, "negative")
    pipe = flux.pipeline
    size = int(pipe.vae.config.sample_size)
    count = len(conditioning) * batch_size
    seeds = image_seeds(seed, count)

    def progress(_pipe: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        context.progress(step + 1, steps)
        return tensors

    def repeat(tensor: Any) -> Any:
        return tensor.repeat_interleave(batch_size, dim=0).to(context.device, pipe.transformer.dtype)

    options: dict[str, Any] = {}
    if negative is not None and true_guidance > 1.0:
        options = {"negative_prompt_embeds": repeat(negative.states.expand(len(conditioning), -1, -1)),
                   "negative_pooled_prompt_embeds": repeat(negative.pooled.expand(len(conditioning), -1)),
                   "true_cfg_scale": true_guidance}
    with lora_applied(flux, loras), torch.inference_mode():
        out = pipe(prompt_embeds=repeat(conditioning.states), pooled_prompt_embeds=repeat(conditioning.pooled),
                   num_inference_steps=steps, guidance_scale=guidance, height=height or size, width=width or size,
                   generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds], output_type="pil",
                   callback_on_step_end=progress, **options)
    labels = tuple(text for text in conditioning.texts for _ in range(batch_size)) if conditioning.texts else ()
    return ImageBatch(tuple(out.images), labels)


def _expected_sd3(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    return _expected(inputs, context, SD3)


@node("sd3.generate", category="generate", output="images", expect_inputs=_expected_sd3)
def sd3_generate(
    conditioning: Conditioning,
    model: str,
    context: RunContext,
    negative: Conditioning | None = None,
    steps: Annotated[int, Field(ge=1, le=1000)] = 28,
    guidance: Annotated[float, Field(ge=0, le=50)] = 5.0,
    width: Annotated[int, Field(ge=0, le=4096, multiple_of=16)] = 0,
    height: Annotated[int, Field(ge=0, le=4096, multiple_of=16)] = 0,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: int = 0,
    loras: LoraStack | None = None,
) -> ImageBatch:
    """Generate images with a Stable Diffusion 3/3.5 model (MMDiT, flow matching) from ``encode.sd3`` conditioning.

    Classifier-free guidance needs ``negative`` (``encode.sd3`` of the
    negative prompt, or of ``""`` as SD3's pipeline does). Each image has its
    own seed, ``sfumato.image_seed(seed, index)``.

    Args:
        conditioning: prompts encoded by ``encode.sd3``.
        model: an SD3 pipeline folder (``transformer/``, ``vae/``, ``scheduler/``), or a single-file SD3
            checkpoint (configs, and the VAE when the file has none, from the model library's SD3 folder).
        negative: what to steer away from, from ``encode.sd3``; required when ``guidance`` > 1.
        steps: sampling steps.
        guidance: classifier-free guidance scale (1 turns it off).
        width: image width; 0: the model's native size.
        height: image height; 0: the model's native size.
        batch_size: images per prompt.
        seed: the first image's seed.
        loras: LoRAs on the transformer (from ``diffusion.lora``); none: the model's own weights.
    """
    import torch

    sd3 = load_flux(context, model, SD3)
    note_lora_files(context, loras)  # the run used them: PNG metadata records their hashes
    _check(sd3, conditioning, "conditioning")
    if guidance > 1.0 and negative is None:
        raise ValueError("guidance > 1 needs 'negative': link encode.sd3 of the negative prompt (\"\" if none), "
                         "or set guidance to 1")
    if negative is not None:
        _check(sd3, negative, "negative")
    pipe = sd3.pipeline
    size = int(pipe.transformer.config.sample_size) * int(pipe.vae_scale_factor)
    seeds = image_seeds(seed, len(conditioning) * batch_size)

    def repeat(tensor: Any) -> Any:
        return tensor.repeat_interleave(batch_size, dim=0).to(context.device, pipe.transformer.dtype)

    def progress(_pipe: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        context.progress(step + 1, steps)
        return tensors

    options: dict[str, Any] = {}
    if negative is not None:
        options = {"negative_prompt_embeds": repeat(negative.states.expand(len(conditioning), -1, -1)),
                   "negative_pooled_prompt_embeds": repeat(negative.pooled.expand(len(conditioning), -1))}
    with lora_applied(sd3, loras), torch.inference_mode():
        out = pipe(prompt_embeds=repeat(conditioning.states), pooled_prompt_embeds=repeat(conditioning.pooled),
                   num_inference_steps=steps, guidance_scale=guidance, height=height or size, width=width or size,
                   generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds], output_type="pil",
                   callback_on_step_end=progress, **options)
    labels = tuple(text for text in conditioning.texts for _ in range(batch_size)) if conditioning.texts else ()
    return ImageBatch(tuple(out.images), labels)
