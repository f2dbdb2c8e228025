"""Diffusion nodes: text-to-image, image-to-image, inpainting, VAE encode/decode, backend dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping

from sfumato import (
    Conditioning,
    Field,
    ImageBatch,
    Latent,
    Port,
    Regions,
    RunContext,
    ValidationContext,
    image_seeds,
    node,
    spec_of,
)

from .controlnet import ControlStack, prepare_controls
from .families import (
    FAMILY_ENCODERS,
    SD,
    SDXL,
    TRANSFORMER_GENERATORS,
    expected_conditioning,
    expected_of_single_file,
    folder_family,
    single_file_family,
    single_file_of,
)
from .ip_adapter import ImagePrompt, image_prompt_embeddings, ip_adapter_applied
from .loading import DiffusionModel, load_diffusion_model, read_model_info
from .lora import LoraStack, family_of_width, lora_applied, model_lock, note_lora_files
from .refiner import describe_stopped_latent
from .regions import generate_regions
from .sampling import SamplingRequest, decode_latents, encode_images, mask_to_latent, preview_image, sample_latents
from .schedulers import SCHEDULER_NAMES
from .speed import (
    SpeedRecipe,
    as_recipe,
    for_one_loop,
    guidance_choice,
    make_sampler,
    prepare,
    sampling_choice,
    validation_problems,
)
from .vocabulary import check_prompts_in_vocabulary

DEFAULT_MODEL = "tiny-shapes-diffusion"
SchedulerName = Literal[SCHEDULER_NAMES]  # type: ignore[valid-type]


def _expected_conditioning(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """What the model's UNet needs, read from its config files (no torch)."""
    for problem in validation_problems(inputs.get("speed")):
        context.problem(problem, "speed")
    _check_layout_inputs(inputs, context)
    if not inputs.get("model"):
        return {}  # a required parameter not set yet: checked when the graph runs
    folder = context.model_folder(inputs["model"])
    if folder is None:
        return _expected_of_file(inputs["model"], context)
    expected = expected_conditioning(folder)  # width, and the family (sdxl) where it is not SD 1.x/2.x
    info = read_model_info(folder)
    _warn_about_sampling_defaults(inputs, context, info)
    if info.get("encoder"):
        expected["encoder"] = info["encoder"]
    wanted = {"conditioning": expected, "negative": expected} if expected else {}
    if expected.get("width"):  # a LoRA targets one UNet width: another family's is refused before loading
        wanted["loras"] = {"family": family_of_width(int(expected["width"]))}
        wanted["control"] = wanted["loras"]  # and so does a ControlNet
        wanted["image_prompt"] = wanted["loras"]  # and an IP-Adapter
    return wanted


#: The sampling inputs of ``diffusion.generate`` a model may ask for in its ``sfumato.json`` ``defaults``.
_SAMPLING_DEFAULTS = {"scheduler": "dpm++", "steps": 20, "guidance": 3.0}


def _warn_about_sampling_defaults(inputs: dict[str, Any], context: ValidationContext,
                                  info: dict[str, Any]) -> None:
    """Warn when a model made for other sampling settings (an LCM-distilled one) is sampled with these.

    A distilled model sampled with 20 DPM-Solver++ steps at guidance 3 draws far worse than with its
    own 2 LCM steps at guidance 1, and nothing else would tell the user why.
    """
    wanted = info.get("defaults")
    recipe = inputs.get("speed")
    chosen = recipe.get("sampler") if isinstance(recipe, dict) else getattr(recipe, "sampler", None)
    if not isinstance(wanted, dict) or chosen:  # the recipe samples its own way
        return
    used = {name: inputs[name] if name in inputs else (None if name in context.given else default)
            for name, default in _SAMPLING_DEFAULTS.items()}
    differing = [f"{name}={used[name]!r} (made for {wanted[name]!r})" for name in _SAMPLING_DEFAULTS
                 if name in wanted and used[name] is not None and used[name] != wanted[name]]
    if differing:
        settings = " ".join(f"{name}={wanted[name]}" for name in _SAMPLING_DEFAULTS if name in wanted)
        context.warn(f"model {inputs.get('model')!r} is made to sample with {settings}, but this node uses "
                     f"{', '.join(differing)}: set them (e.g. --set {' --set '.join(settings.split())}) "
                     "or its images will be poor", "model")


def _expected_of_file(model: str, context: ValidationContext) -> dict[str, dict[str, Any]]:
    """A single-file checkpoint: its family from its keys; a file that is no checkpoint is a problem."""
    file = single_file_of(model, context.model_sources)
    if file is None:
        return {}
    try:
        expected = expected_of_single_file(file)
    except Exception as error:  # noqa: BLE001 - SfumatoError from the file's keys, reported on the input
        context.problem(str(error), "model")
        return {}
    return {"conditioning": expected, "negative": expected} if expected else {}


def _prompt_conditioning(model: DiffusionModel, prompts: list[str]) -> Conditioning:
    """Encode prompts with the pipeline's own CLIP text encoder (SD folders)."""
    import torch

    if model.family == SDXL:
        raise ValueError(f"model {model.name!r} is an SDXL model: encode its prompts with encode.sdxl "
                         f"(model={model.name!r}) and link the conditioning, instead of 'prompt'/'negative_prompt'")
    if model.text_encoder is None:
        raise ValueError(f"model {model.name!r} has no text encoder of its own; link a Conditioning from "
                         f"encode.text (with model={model.info.get('encoder', '?')!r})")
    tokens = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.text_encoder(tokens.input_ids.to(model.device))
    return Conditioning(out.last_hidden_state, model.name, int(out.last_hidden_state.shape[-1]),
                        int(out.last_hidden_state.shape[1]), out.pooler_output, tuple(prompts))


def _unconditional(model: DiffusionModel, like: Conditioning) -> Conditioning:
    """The unconditional input: zeros for zoo models (trained with dropped captions), "" for SD."""
    import torch

    # SDXL, as its pipeline does by default (force_zeros_for_empty_prompt), also uses zeros.
    if model.info.get("unconditional", "zeros") == "zeros" and model.text_encoder is None:
        pooled = torch.zeros_like(like.pooled) if like.pooled is not None else None
        return Conditioning(torch.zeros_like(like.states), like.encoder, like.width, like.sequence_length, pooled)
    return _prompt_conditioning(model, [""] * len(like))


def _check_conditioning(model: DiffusionModel, conditioning: Conditioning, role: str) -> None:
    family = conditioning.family or SD
    if family != model.family:
        raise ValueError(f"{role} is {family} conditioning (encoder {conditioning.encoder!r}), but model "
                         f"{model.name!r} is an {model.family} model, which takes {FAMILY_ENCODERS[model.family]}")
    width = model.unet.config.cross_attention_dim
    if conditioning.width != width:
        raise ValueError(f"{role} has width {conditioning.width} (encoder {conditioning.encoder!r}), but model "
                         f"{model.name!r} expects {width}")
    wanted = model.info.get("encoder")
    if wanted and conditioning.encoder != wanted:
        raise ValueError(f"{role} comes from encoder {conditioning.encoder!r}, but model {model.name!r} was "
                         f"trained with {wanted!r}")


def _repeat(tensor: Any, times: int) -> Any:
    return None if tensor is None else tensor.repeat_interleave(times, dim=0)


@node("diffusion.generate", category="generate", outputs={"images": ImageBatch, "latent": Latent},
      expect_inputs=_expected_conditioning, describe_outputs=describe_stopped_latent,
      batch=lambda calls: generate_batch(calls))
def generate(
    context: RunContext,
    conditioning: Conditioning | None = None,
    prompt: str = "",
    negative: Conditioning | None = None,
    negative_prompt: str = "",
    model: str = DEFAULT_MODEL,
    scheduler: SchedulerName = "dpm++",
    steps: Annotated[int, Field(ge=1, le=1000)] = 20,
    guidance: Annotated[float, Field(ge=0, le=50)] = 3.0,
    width: Annotated[int, Field(ge=0, le=4096, multiple_of=8)] = 0,
    height: Annotated[int, Field(ge=0, le=4096, multiple_of=8)] = 0,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: int = 0,
    init_images: ImageBatch | None = None,
    strength: Annotated[float, Field(gt=0, le=1)] = 0.6,
    mask: ImageBatch | None = None,
    denoising_end: Annotated[float, Field(gt=0, le=1)] = 1.0,
    loras: LoraStack | None = None,
    control: ControlStack | None = None,
    image_prompt: ImagePrompt | None = None,
    layout: Regions | None = None,
    attention_slicing: bool = False,
    vae_tiling: bool = False,
    cpu_offload: bool = False,
    compile: bool = False,
    speed: Annotated[SpeedRecipe | None, Port("JSON")] = None,
) -> dict[str, Any]:
    """Generate images with a diffusers UNet: text-to-image, image-to-image or inpainting.

    Conditioning comes from ``encode.text`` (or, for Stable Diffusion folders,
    from ``prompt`` through the pipeline's own text encoder). Each image has
    its own seed, ``sfumato.image_seed(seed, index)`` (``seed`` itself for the
    first), so images are identical whether made one by one or in a batch, and
    batches of different seeds never share an image. Precision follows the run's ``--dtype``.

    Args:
        conditioning: prompts encoded by ``encode.text``; one or more prompts.
        prompt: used instead of ``conditioning`` with models that have their own text encoder.
        negative: what to steer away from; default: the unconditional input.
        negative_prompt: with models that have their own text encoder: what to steer away from, as text.
        model: a model name (``tiny-shapes-diffusion``), a diffusers folder, a hub id, or a single-file
            ``.safetensors`` checkpoint (SD 1.x/2.x/XL; configs from the model library's folder of its family).
        scheduler: the sampler.
        steps: denoising steps.
        guidance: classifier-free guidance scale (1 turns guidance off).
        width: image width; 0 uses the model's native size.
        height: image height; 0 uses the model's native size.
        batch_size: images per prompt.
        seed: the first image's seed.
        init_images: start from these images (image-to-image / inpainting).
        strength: how far from ``init_images`` to move (1 ignores them).
        mask: with ``init_images``: white where to repaint.
        denoising_end: stop at this fraction of the schedule (SDXL base + refiner: 0.8, and link ``latent``
            to ``sdxl.refine``); 1 denoises fully.
        loras: LoRAs to apply (from ``diffusion.lora``); none: the model's own weights.
        control: ControlNets with their control images (from ``diffusion.controlnet``).
        image_prompt: reference images to generate like, next to the text (from ``diffusion.ip_adapter``).
        layout: regional generation: where each prompt of ``conditioning`` acts (a ``Layout`` from
            ``layout.plan``, or ``layout.regions``); the conditioning then holds the background's prompt,
            then each object's (``layout.prompts``), and each object is denoised in its window, fused each step.
        attention_slicing: less memory, a little slower (GPU).
        vae_tiling: decode large images in tiles (GPU).
        cpu_offload: keep weights on the CPU between calls (saves GPU memory).
        compile: ``torch.compile`` the UNet (slow first call, faster after; GPU).
        speed: acceleration levers (a JSON object): dtype, channels_last, attention, fuse_qkv, compile,
            quantize, step_cache, token_merging, sampler, steps, lcm_lora, guidance, backend; see
            ``sfumato_diffusers.speed``.
    """
    diffusion = load_diffusion_model(context, model, attention_slicing=attention_slicing,
                                     vae_tiling=vae_tiling, compile_unet=compile)
    diffusion, scheduler, steps = prepare(context, diffusion, speed, scheduler, steps, loras)
    note_lora_files(context, loras)  # the run used them: PNG metadata records their hashes
    guidance = guidance_choice(speed, guidance)  # an LCM-LoRA samples without guidance
    if layout is not None:
        return _generate_layout(context, diffusion, scheduler, layout, conditioning, negative, negative_prompt,
                                steps, guidance, width, height, batch_size, seed, loras, (init_images, mask, control,
                                                                                         image_prompt, speed))
    with lora_applied(diffusion, loras):  # text-encoder LoRAs act on prompts, so encoding is inside
        if negative is None and negative_prompt:
            negative = _prompt_conditioning(diffusion, [negative_prompt])
        request, labels = _prepare_request(diffusion, conditioning, prompt, negative, steps, guidance, width,
                                           height, batch_size, seed, init_images, strength, mask,
                                           denoising_end=denoising_end)
        request.controls = prepare_controls(context, diffusion, control, len(request.seeds), request.width,
                                            request.height)
        request.image_embeds, request.ip_masks = image_prompt_embeddings(
            context, diffusion, image_prompt, len(request.seeds), request.width, request.height)
        with ip_adapter_applied(diffusion, image_prompt, model_lock(diffusion)):
            [result] = _sample(context, diffusion, scheduler, [(request, labels)], cpu_offload)
    return result


# --- regional generation (a layout): the loop is in regions.py -------------------------------------------------

#: Inputs regional generation cannot combine with a layout (yet), and why.
_NOT_WITH_LAYOUT = {"init_images": "image-to-image", "mask": "inpainting", "control": "ControlNets",
                    "image_prompt": "image prompts"}


def _check_layout_inputs(inputs: dict[str, Any], context: ValidationContext) -> None:
    """Validation: a layout with inputs the regional loop cannot use is refused before anything loads."""
    if "layout" not in context.given:
        return
    for name, what in _NOT_WITH_LAYOUT.items():
        if name in context.given:
            context.problem(f"layout and {name} together: regional generation does not do {what}; "
                            f"drop one of them", name)
    if "prompt" in context.given and "conditioning" not in context.given:
        context.problem("a layout needs 'conditioning' with one prompt per region (layout.prompts -> "
                        "encode.text), not a single 'prompt'", "prompt")
    try:
        recipe = as_recipe(inputs.get("speed"))
    except ValueError:  # an invalid recipe is reported by validation_problems above
        recipe = None
    if recipe is not None and recipe.step_cache > 1:
        context.problem("step_cache with a layout: the regional loop calls the UNet once per window size "
                        "each step, which a step cache cannot follow; drop step_cache", "speed")


def _generate_layout(context: RunContext, diffusion: DiffusionModel, scheduler: str, layout: Regions,
                     conditioning: Conditioning | None, negative: Conditioning | None, negative_prompt: str,
                     steps: int, guidance: float, width: int, height: int, batch_size: int, seed: int,
                     loras: LoraStack | None, others: tuple[Any, ...]) -> dict[str, Any]:
    """``diffusion.generate`` with a layout: checks, then the fused regional loop of ``regions.py``."""
    for (name, what), value in zip(_NOT_WITH_LAYOUT.items(), others):
        if value is not None:
            raise ValueError(f"layout and {name} together: regional generation does not do {what}; drop one")
    recipe = as_recipe(others[-1])
    if recipe is not None and recipe.step_cache > 1:
        raise ValueError("speed: step_cache cannot follow the regional loop (one UNet call per window size "
                         "each step); drop step_cache with a layout")
    if conditioning is None:
        raise ValueError("layout: needs 'conditioning' with one prompt per region, background first "
                         "(layout.prompts -> encode.text)")
    with lora_applied(diffusion, loras):
        _check_conditioning(diffusion, conditioning, "conditioning")
        check_prompts_in_vocabulary(diffusion.name, diffusion.info, conditioning.texts)
        if negative is None and negative_prompt:
            negative = _prompt_conditioning(diffusion, [negative_prompt])
        if negative is not None:
            _check_conditioning(diffusion, negative, "negative")
        elif guidance > 1.0:
            negative = _unconditional(diffusion, Conditioning(conditioning.states[:1], conditioning.encoder,
                                                              conditioning.width, conditioning.sequence_length,
                                                              None if conditioning.pooled is None
                                                              else conditioning.pooled[:1]))
        size = diffusion.default_size

        def fresh_scheduler() -> Any:
            return make_sampler(scheduler, diffusion.scheduler_config, bool(diffusion.info.get("lcm")))

        def report(step: int, total: int) -> None:
            context.progress(step, total, "regional denoising")

        return generate_regions(diffusion, fresh_scheduler, layout, conditioning,
                                negative if guidance > 1.0 else None, steps=steps, guidance=guidance,
                                width=width or size, height=height or size, batch_size=batch_size, seed=seed,
                                progress=report)


def _prepare_request(diffusion: DiffusionModel, conditioning: Conditioning | None, prompt: str,
                     negative: Conditioning | None, steps: int, guidance: float, width: int, height: int,
                     batch_size: int, seed: int, init_images: ImageBatch | None, strength: float,
                     mask: ImageBatch | None, denoising_end: float = 1.0) -> tuple[SamplingRequest, list[str]]:
    """Check one call's inputs and turn them into a sampling request plus image labels."""
    if conditioning is None:
        if not prompt:
            raise ValueError("give either 'conditioning' (from encode.text) or 'prompt'")
        conditioning = _prompt_conditioning(diffusion, [prompt])
    _check_conditioning(diffusion, conditioning, "conditioning")
    check_prompts_in_vocabulary(diffusion.name, diffusion.info, conditioning.texts)
    if negative is not None:
        _check_conditioning(diffusion, negative, "negative")
        if len(negative) not in (1, len(conditioning)):
            raise ValueError(f"negative has {len(negative)} prompts for {len(conditioning)} prompts")
        if len(negative) == 1 and len(conditioning) > 1:
            negative = Conditioning(negative.states.expand(len(conditioning), -1, -1), negative.encoder,
                                    negative.width, negative.sequence_length,
                                    None if negative.pooled is None else negative.pooled.expand(len(conditioning), -1))
    if negative is None and guidance > 1.0:
        negative = _unconditional(diffusion, conditioning)
    size = diffusion.default_size
    width, height = width or size, height or size
    count = len(conditioning) * batch_size
    request = SamplingRequest(
        states=_repeat(conditioning.states, batch_size), pooled=_repeat(conditioning.pooled, batch_size),
        negative_states=_repeat(negative.states, batch_size) if negative is not None else None,
        negative_pooled=_repeat(negative.pooled, batch_size) if negative is not None else None,
        seeds=image_seeds(seed, count), steps=steps, guidance=guidance, height=height, width=width,
    )
    if init_images is not None:
        images = list(init_images.images)
        if len(images) not in (1, count):
            raise ValueError(f"init_images has {len(images)} images for {count} outputs; give 1 or {count}")
        request.init_latents = encode_images(diffusion, images * (count if len(images) == 1 else 1), width, height)
        request.strength = strength
        if mask is not None:
            masks = list(mask.images)
            request.mask = mask_to_latent(diffusion, masks * (count if len(masks) == 1 else 1), width, height)
    elif mask is not None:
        raise ValueError("a mask needs init_images to inpaint")
    request.denoising_end = denoising_end if denoising_end < 1.0 else None
    texts = conditioning.texts or (prompt,) * len(conditioning)
    return request, [text for text in texts for _ in range(batch_size)]


def _merge_key(request: SamplingRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share one denoising loop."""
    return (request.steps, request.guidance, request.height, request.width, request.negative_states is None,
            request.pooled is None, request.init_latents is None, request.mask is None,
            request.strength if request.init_latents is not None else None, request.denoising_end,
            id(request) if request.controls or request.image_embeds is not None else None)  # per request: unmerged


def _merge(requests: list[SamplingRequest]) -> SamplingRequest:
    import torch

    def cat(name: str) -> Any:
        parts = [getattr(r, name) for r in requests]
        return None if parts[0] is None else torch.cat(parts)

    first = requests[0]
    if len(requests) == 1:
        return first
    return SamplingRequest(cat("states"), cat("pooled"), cat("negative_states"), cat("negative_pooled"),
                           [s for r in requests for s in r.seeds], first.steps, first.guidance, first.height,
                           first.width, cat("init_latents"), first.strength, cat("mask"),
                           denoising_end=first.denoising_end)


def _sample(context: RunContext, diffusion: DiffusionModel, scheduler: str,
            items: list[tuple[SamplingRequest, list[str]]], cpu_offload: bool = False) -> list[dict[str, Any]]:
    """Sample every request, merging those that can share a loop; results in order."""
    import torch

    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, (request, _) in enumerate(items):
        groups.setdefault(_merge_key(request), []).append(index)
    results: list[dict[str, Any]] = [{} for _ in items]
    if cpu_offload and context.device != "cpu":
        diffusion.unet.to(context.device)
        diffusion.vae.to(context.device)
    try:
        for indices in groups.values():
            merged = _merge([items[i][0] for i in indices])
            sampler = make_sampler(scheduler, diffusion.scheduler_config, bool(diffusion.info.get("lcm")))
            latents = sample_latents(for_one_loop(diffusion), sampler, merged, _progress_reporter(context, diffusion))
            pictures = decode_latents(diffusion, latents)
            offset = 0
            for index in indices:
                request, labels = items[index]
                count = len(request.seeds)
                results[index] = {
                    "images": ImageBatch(tuple(pictures[offset:offset + count]), tuple(labels) if any(labels) else ()),
                    "latent": Latent(latents[offset:offset + count].cpu(), diffusion.name,
                                     float(diffusion.vae.config.scaling_factor)),
                }
                offset += count
    finally:
        if cpu_offload and context.device != "cpu":
            diffusion.unet.to("cpu")
            diffusion.vae.to("cpu")
            torch.cuda.empty_cache()
    return results


def _defaults() -> dict[str, Any]:
    return {name: item.default for name, item in spec_of(generate).inputs.items() if not item.required}


def _progress_reporter(context: RunContext, diffusion: DiffusionModel) -> Any:
    """Step progress, with a small preview about five times a run when someone is watching."""
    def report(step: int, total: int, latents: Any) -> None:
        every = max(1, total // 5)
        if context.wants_previews and (step % every == 0 or step == total):
            context.progress(step, total, preview=preview_image(diffusion, latents))
        else:
            context.progress(step, total)

    return report


def generate_batch(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``diffusion.generate`` for several runs at once: one denoising loop per compatible group."""
    results: list[dict[str, Any] | None] = [None] * len(calls)
    by_model: dict[tuple[Any, ...], list[int]] = {}
    for index, call in enumerate(calls):
        if call.get("layout") is not None:  # regional generation runs call by call (its loop is per image)
            results[index] = generate(**call)
            continue
        key = (call.get("model", DEFAULT_MODEL), call.get("scheduler", "dpm++"), call.get("attention_slicing", False),
               call.get("vae_tiling", False), call.get("compile", False), call.get("cpu_offload", False),
               call.get("loras"), as_recipe(call.get("speed")), call.get("image_prompt"))
        by_model.setdefault(key, []).append(index)
    for (model, scheduler, slicing, tiling, compiled, offload, loras, speed, image_prompt), indices \
            in by_model.items():
        context = calls[indices[0]]["context"]
        diffusion = load_diffusion_model(context, model, attention_slicing=slicing, vae_tiling=tiling,
                                         compile_unet=compiled)
        diffusion, scheduler, _ = prepare(context, diffusion, speed, scheduler, 1, loras)
        note_lora_files(context, loras)
        with lora_applied(diffusion, loras):  # one stack per group: calls with other stacks are other groups
            items = []
            for index in indices:
                call = {**_defaults(), **calls[index]}
                if call["negative"] is None and call["negative_prompt"]:
                    call["negative"] = _prompt_conditioning(diffusion, [call["negative_prompt"]])
                items.append(_prepare_request(diffusion, call["conditioning"], call["prompt"], call["negative"],
                                              sampling_choice(speed, "", call["steps"])[1],
                                              guidance_choice(speed, call["guidance"]),
                                              call["width"], call["height"],
                                              call["batch_size"], call["seed"], call["init_images"],
                                              call["strength"], call["mask"],
                                              denoising_end=call["denoising_end"]))
                request = items[-1][0]
                request.controls = prepare_controls(context, diffusion, call["control"], len(request.seeds),
                                                    request.width, request.height)
                request.image_embeds, request.ip_masks = image_prompt_embeddings(
                    context, diffusion, image_prompt, len(request.seeds), request.width, request.height)
            with ip_adapter_applied(diffusion, image_prompt, model_lock(diffusion)):
                for index, result in zip(indices, _sample(context, diffusion, scheduler, items, offload)):
                    results[index] = result
    return results  # type: ignore[return-value]


@node("latent.encode", category="latent", output="latent")
def vae_encode(images: ImageBatch, context: RunContext, model: str = DEFAULT_MODEL,
               width: Annotated[int, Field(ge=0, le=4096, multiple_of=8)] = 0,
               height: Annotated[int, Field(ge=0, le=4096, multiple_of=8)] = 0) -> Latent:
    """Encode images into a diffusion model's latent space (its AutoencoderKL).

    Args:
        images: the images (resized to width x height).
        model: a diffusion model name or folder.
        width: 0 uses the model's native size.
        height: 0 uses the model's native size.
    """
    diffusion = load_diffusion_model(context, model)
    size = diffusion.default_size
    latents = encode_images(diffusion, list(images.images), width or size, height or size)
    return Latent(latents.cpu(), model, float(diffusion.vae.config.scaling_factor))


@node("latent.decode", category="latent", output="images")
def vae_decode(latent: Latent, context: RunContext, model: str = DEFAULT_MODEL) -> ImageBatch:
    """Decode latents into images with a diffusion model's AutoencoderKL.

    Args:
        latent: latents from ``latent.encode`` or ``diffusion.generate``.
        model: the model whose autoencoder made them.
    """
    diffusion = load_diffusion_model(context, model)
    return ImageBatch(tuple(decode_latents(diffusion, latent.samples.to(diffusion.device, diffusion.dtype))))


#: The generator of a diffusers folder or hub id that declares none (``sfumato.json`` without ``generator``).
DIFFUSION_GENERATOR = "diffusion.generate"


def generator_of(model: str, sources: Mapping[str, Any], folder_of: Callable[[str], Path | None]) -> str:
    """The node that generates with ``model``, as the model declares it; ``""`` when it declares none.

    A registered model source names it (``ModelSource.generator``); a model
    folder in its ``sfumato.json`` (``"generator": "vae.generate"``; folders
    written before that key existed name a ``family``, whose node is
    ``<family>.generate``). A diffusers folder or a hub id is a diffusion model.
    """
    source = sources.get(model)
    if source is not None and source.generator:
        return source.generator
    folder = folder_of(model)
    info = read_model_info(folder) if folder is not None else {}
    if info.get("generator"):
        return str(info["generator"])
    if info.get("family", "diffusion") != "diffusion":
        return f"{info['family']}.generate"
    if folder is not None and folder_family(folder) in TRANSFORMER_GENERATORS:  # Flux, SD3: flow matching
        return TRANSFORMER_GENERATORS[folder_family(folder)]
    if folder is None and single_file_family(model, sources) in TRANSFORMER_GENERATORS:  # a Flux or SD3 file
        return TRANSFORMER_GENERATORS[single_file_family(model, sources)]
    if folder is None or (folder / "unet").is_dir() or (folder / "model_index.json").exists():
        return DIFFUSION_GENERATOR
    return ""


def _run_folder(context: RunContext) -> Callable[[str], Path | None]:
    def folder_of(model: str) -> Path | None:
        try:
            path = context.models.resolve(model)
        except Exception:  # noqa: BLE001 - an unknown name is reported when the generator loads it
            return None
        return path if isinstance(path, Path) and path.is_dir() else None

    return folder_of


def _run_generator(context: RunContext, model: str) -> str:
    generator = generator_of(model, context.models.sources, _run_folder(context))
    if not generator:
        raise ValueError(f"model {model!r} declares no generator node: register it as a ModelSource with "
                         "generator=..., or add \"generator\": \"<node id>\" to its sfumato.json")
    return generator


def _check_backend(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """Validation of ``generate.image``: the model's generator exists; inputs it ignores are warnings."""
    model = inputs.get("model")
    if not model:
        return {}  # a required parameter not set yet: checked when the graph runs
    generator = generator_of(model, context.model_sources, context.model_folder)
    if not generator:
        context.problem(f"model {model!r} declares no generator node: register it as a ModelSource with "
                        "generator=..., or add \"generator\": \"<node id>\" to its sfumato.json", "model")
        return {}
    spec = context.registry.nodes.get(generator)
    if spec is None:
        reason = context.registry.unknown_node_message(generator)
        context.problem(f"model {model!r} is generated by node {generator!r}, which is not available: {reason}",
                        "model")
        return {}
    ignored = [name for name in spec_of(generate_image).inputs if name in context.given and name not in spec.inputs]
    if ignored:
        # One line for the node, naming each input: switching backends should not print a page of warnings.
        names = ", ".join(repr(name) for name in ignored)
        context.warn(f"{names} {'is' if len(ignored) == 1 else 'are'} ignored: model {model!r} is generated by "
                     f"{generator}, which does not take {'it' if len(ignored) == 1 else 'them'}")
    return _expected_conditioning(inputs, context) if generator == DIFFUSION_GENERATOR else {}


def generate_image_batch(calls: list[dict[str, Any]]) -> list[ImageBatch]:
    """``generate.image`` for several runs: diffusion calls share denoising loops."""
    results: list[ImageBatch | None] = [None] * len(calls)
    diffusion_calls = [i for i, call in enumerate(calls)
                       if _run_generator(call["context"], call["model"]) == DIFFUSION_GENERATOR]
    if diffusion_calls:
        batched = generate_batch([{**_defaults(), **{k: calls[i][k] for k in _SHARED_INPUTS}} for i in diffusion_calls])
        for index, result in zip(diffusion_calls, batched):
            results[index] = result["images"]
    for index, call in enumerate(calls):
        if results[index] is None:
            results[index] = generate_image(**call)
    return results  # type: ignore[return-value]


_SHARED_INPUTS = ("conditioning", "negative", "model", "scheduler", "steps", "guidance", "batch_size", "seed",
                  "context", "speed")


@node("generate.image", category="generate", output="images", batch=lambda calls: generate_image_batch(calls),
      expect_inputs=_check_backend)
def generate_image(
    conditioning: Conditioning,
    context: RunContext,
    model: str = DEFAULT_MODEL,
    steps: Annotated[int, Field(ge=1, le=1000)] = 20,
    scheduler: SchedulerName = "dpm++",
    guidance: Annotated[float, Field(ge=0, le=50)] = 3.0,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: int = 0,
    negative: Conditioning | None = None,
    speed: Annotated[SpeedRecipe | None, Port("JSON")] = None,
) -> ImageBatch:
    """Generate images with whichever backend ``model`` is: diffusion, VAE or GAN.

    The model declares its generator node (``ModelSource.generator``, or
    ``generator`` in a model folder's ``sfumato.json``); this node passes it
    the inputs it takes. So a graph swaps backends with
    ``--set model=tiny-shapes-gan``. Steps, scheduler, guidance and negative
    apply to diffusion only: set for another backend, validation warns that
    they are ignored.

    Args:
        conditioning: prompts encoded by ``encode.text``.
        model: a model name or folder.
        steps: diffusion only: denoising steps.
        scheduler: diffusion only: the sampler.
        guidance: diffusion only: classifier-free guidance scale.
        batch_size: images per prompt.
        seed: the first image's seed.
        negative: diffusion only: what to steer away from.
        speed: diffusion only: acceleration levers (a JSON object), as on ``diffusion.generate``.
    """
    generator = _run_generator(context, model)
    if generator == DIFFUSION_GENERATOR:
        return generate(context, conditioning=conditioning, negative=negative, model=model, scheduler=scheduler,
                        steps=steps, guidance=guidance, batch_size=batch_size, seed=seed, speed=speed)["images"]
    given = {"conditioning": conditioning, "model": model, "steps": steps, "scheduler": scheduler,
             "guidance": guidance, "batch_size": batch_size, "seed": seed, "negative": negative}
    accepted = context.node_inputs(generator)
    return context.call_node(generator, **{name: value for name, value in given.items() if name in accepted})
