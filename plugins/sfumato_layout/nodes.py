"""Layout nodes: plan a layout from a prompt, turn it into region prompts, draw it, generate from it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from sfumato import (
    Conditioning,
    Field,
    ImageBatch,
    ModelNotFoundError,
    Regions,
    RunContext,
    image_seed,
    node,
    torch_dtype,
)

from . import grammar
from .layout import COLOUR_RGB, Layout, fill_colours, to_regions
from .regional import RegionalRequest, latent_windows, regional_latents

Planner = Literal["grammar", "model"]

#: The planner the plugin ships (``weights/tiny-layout-planner``): the default language model.
SHIPPED_PLANNER = "tiny-layout-planner"
#: How the shipped planner is made (its training.json holds the exact run).
TRAINING_COMMAND = ("sfumato zoo layouts --out pairs.jsonl --n 20000 && "
                    "sfumato layout train --pairs pairs.jsonl --out planner --steps 3000")


def _load_language_model(context: RunContext, name: str) -> tuple[Any, Any]:
    """A causal LM (a model name or a local folder) and its tokenizer (once per process, through the model manager)."""
    preparing = time.perf_counter()
    try:
        path = context.models.resolve(name)
    except ModelNotFoundError as error:
        hint = f"; make it with: {TRAINING_COMMAND}" if name == SHIPPED_PLANNER else ""
        raise ModelNotFoundError(f"language_model: {error}{hint}") from None
    if not isinstance(path, Path) or not (path / "config.json").is_file():
        raise ModelNotFoundError(f"language_model: {name!r} is not a local Hugging Face model folder (no config.json)")

    def load() -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(context.dtype))
        return model.eval().to(context.device), AutoTokenizer.from_pretrained(str(path))

    return context.models.get(f"layout-lm:{path}", context.device, context.dtype, load, preparing_since=preparing)


@node("layout.plan", category="layout", output="layout")
def plan(prompt: str, context: RunContext, planner: Planner = "grammar", language_model: str = SHIPPED_PLANNER,
         background: str = "black", object_size: Annotated[float, Field(gt=0.05, le=1.0)] = 0.28,
         palette: list[str] = ["red", "blue", "green", "yellow", "purple"]) -> Layout:  # noqa: B006 - never mutated
    """Plan where each object of a prompt goes: prompt -> ``Layout`` (objects with box and caption; background).

    The ``grammar`` planner parses counts, colours, shapes and other nouns, one
    relation (left of, right of, above, below) and the background, then places
    boxes that do not overlap. It is fast and deterministic. The ``model``
    planner has a causal language model write the layout as JSON under
    constrained decoding, so its output always parses; captions are words
    of the prompt. By default that is the plugin's own ``tiny-layout-planner``
    (a small GPT-2 trained on the zoo's scenes, see its model card); any
    local Hugging Face causal LM folder works too.

    Args:
        prompt: what to draw (``two red circles to the left of a blue square``).
        planner: the planning backend.
        language_model: with ``planner="model"``: ``tiny-layout-planner`` (shipped) or a local causal LM folder.
        background: the background when the prompt names none.
        object_size: each box's side, as a fraction of the canvas.
        palette: colours for objects the prompt gives none (one that stands out from the
            background); empty: leave them uncoloured.
    """
    unknown = [colour for colour in palette if colour not in COLOUR_RGB]
    if unknown:
        raise ValueError(f"palette: unknown colour(s) {unknown}; known: {', '.join(COLOUR_RGB)}")
    if planner == "model":
        if not language_model:
            raise ValueError(f"language_model: planner='model' needs a causal language model "
                             f"({SHIPPED_PLANNER!r} or a folder)")
        from .language_model import plan_with_model

        model, tokenizer = _load_language_model(context, language_model)
        return fill_colours(plan_with_model(model, tokenizer, prompt), tuple(palette))
    try:
        return grammar.plan(prompt, object_size=object_size, palette=tuple(palette), default_background=background)
    except ValueError as error:
        raise ValueError(f"prompt: {error}") from None


@node("layout.prompts", category="layout", output="texts")
def region_prompts(layout: Layout, template: str = "a {caption} on a {background} background",
                   background_template: str = "a plain {background} background") -> list[str]:
    """One prompt per region, for ``encode.text``: the background first, then each object.

    Args:
        layout: a planned layout.
        template: an object's prompt; ``{caption}`` and ``{background}`` are filled in.
        background_template: the background's prompt.
    """
    try:
        return [background_template.format(background=layout.background or "plain")] + [
            template.format(caption=obj.caption, background=layout.background or "plain") for obj in layout.objects]
    except (KeyError, IndexError) as error:
        raise ValueError(f"template: only {{caption}} and {{background}} can be filled in, not {error}") from None


@node("layout.regions", category="layout", output="regions")
def regions(layout: Layout, background: Literal["flat", "prompt"] = "flat",
            object_fill: Annotated[float, Field(gt=0.05, le=1.0)] = 0.56,
            background_weight: Annotated[float, Field(gt=0, le=10)] = 0.1,
            decode: Literal["windows", "canvas"] = "windows") -> Regions:
    """A layout as ``Regions``, for a generator that denoises region by region (``diffusion.generate``'s ``layout``).

    Linking a ``Layout`` straight into a ``Regions`` input does the same with
    these defaults; this node sets them. The generator's conditioning then
    holds one prompt per region, background first (``layout.prompts``).

    Args:
        layout: a planned layout.
        background: ``flat`` keeps the canvas outside the objects on the layout's background colour;
            ``prompt`` denoises the background prompt over the whole canvas.
        object_fill: the share of its window an object covers; a window is its box divided by this.
        background_weight: with ``background="prompt"``: the background prompt's weight inside windows.
        decode: ``windows`` decodes each object's window on its own over the background (a small VAE
            shifts colours on a canvas larger than it was trained on); ``canvas`` decodes it in one piece.
    """
    return to_regions(layout, background=background, object_fill=object_fill,
                      background_weight=background_weight, decode=decode)


@node("layout.draw", category="layout", output="images")
def draw(layout: Layout, width: Annotated[int, Field(ge=16, le=4096)] = 256,
         height: Annotated[int, Field(ge=16, le=4096)] = 256) -> ImageBatch:
    """Render a layout for inspection: its background colour, each box outlined and captioned.

    Args:
        layout: a planned layout.
        width: image width in pixels.
        height: image height in pixels.
    """
    from PIL import Image, ImageDraw

    background = COLOUR_RGB.get(layout.background, (200, 200, 200))
    image = Image.new("RGB", (width, height), background)
    pen = ImageDraw.Draw(image)
    # Outline in whichever of black and white stands out from the background.
    ink = (0, 0, 0) if sum(background) > 380 else (255, 255, 255)
    for obj in layout.objects:
        x0, y0, x1, y1 = obj.box
        box = (x0 * (width - 1), y0 * (height - 1), x1 * (width - 1), y1 * (height - 1))
        colour = next((COLOUR_RGB[word] for word in obj.caption.split() if word in COLOUR_RGB), ink)
        pen.rectangle(box, outline=colour if colour != background else ink, width=max(1, width // 128))
        pen.text((box[0] + 2, box[1] + 2), obj.caption, fill=ink)
    return ImageBatch((image,), (layout.prompt or json.dumps(layout.as_dict()),))


def _to_array(vae: Any, latents: Any) -> Any:
    """Latents to an ``(H, W, 3)`` float array in 0..255."""
    import torch

    with torch.inference_mode():
        pixels = vae.decode(latents / vae.config.scaling_factor).sample
    return ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy()


def _decode(vae: Any, latents: Any, windows: list[Any], factor: int, flat: tuple[int, int, int] | None) -> Any:
    """Decode the canvas, or each window on its own pasted over the flat background (averaged where they overlap)."""
    import numpy as np
    from PIL import Image

    height, width = latents.shape[2] * factor, latents.shape[3] * factor
    if not windows:
        return Image.fromarray(_to_array(vae, latents).round().astype(np.uint8))
    base = np.empty((height, width, 3), dtype=np.float32)
    base[:] = flat if flat is not None else _to_array(vae, latents)
    total = np.zeros((height, width, 3), dtype=np.float32)
    weight = np.zeros((height, width, 1), dtype=np.float32)
    for window in windows:
        top, left = window.top * factor, window.left * factor
        rows, cols = slice(top, top + window.size_y * factor), slice(left, left + window.size_x * factor)
        total[rows, cols] += _to_array(vae, window.crop(latents))
        weight[rows, cols] += 1.0
    image = np.where(weight > 0, total / np.maximum(weight, 1.0), base)
    return Image.fromarray(image.clip(0, 255).round().astype(np.uint8))


# --- regional generation -------------------------------------------------------------------------------------------

Scheduler = Literal["ddim", "dpm++", "euler", "ddpm"]
_SCHEDULERS = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
               "ddpm": "DDPMScheduler"}


def _load(context: RunContext, name: str) -> dict[str, Any]:
    """The UNet and VAE of a diffusers folder (once per process, through the model manager)."""
    preparing = time.perf_counter()
    path = context.models.resolve(name)
    if not isinstance(path, Path) or not all((path / part).is_dir() for part in ("unet", "vae", "scheduler")):
        raise ModelNotFoundError(f"model: {name!r} is not a local diffusers folder with unet/, vae/ and scheduler/")
    dtype = torch_dtype(context.dtype)

    def load() -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(path), subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", torch_dtype=dtype)
        info = json.loads((path / "sfumato.json").read_text()) if (path / "sfumato.json").exists() else {}
        return {"unet": unet.eval().to(context.device), "vae": vae.eval().to(context.device), "info": info,
                "scheduler": json.loads((path / "scheduler" / "scheduler_config.json").read_text())}

    return context.models.get(f"layout-diffusion:{name}", context.device, context.dtype, load,
                              preparing_since=preparing)


def _flat_latent(vae: Any, rgb: tuple[int, int, int], height: int, width: int) -> Any:
    """The VAE latent (scaled) of a plain background of colour ``rgb``.

    A perfectly flat image is out of distribution for a VAE with group
    normalisation (zero variance), and small VAEs encode it to the wrong
    colour. So a contrasting square is drawn in the middle, the image encoded,
    and the latent's border (plain background, in distribution) spread over
    the whole canvas, per channel.
    """
    import torch

    pixels = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).repeat(1, height, width)
    contrast = 12.0 if sum(rgb) > 380 else 245.0
    pixels[:, height * 3 // 8:height * 5 // 8, width * 3 // 8:width * 5 // 8] = contrast
    with torch.inference_mode():
        latent = vae.encode((pixels / 127.5 - 1.0)[None].to(vae.device, vae.dtype)).latent_dist.mean[0]
    ring = torch.cat([latent[:, 0], latent[:, -1], latent[:, :, 0], latent[:, :, -1]], dim=1)
    return ring.median(dim=1).values.view(-1, 1, 1).expand_as(latent).clone() * vae.config.scaling_factor


@node("layout.generate", category="generate", output="images")
def generate(
    context: RunContext,
    layout: Layout,
    conditioning: Conditioning,
    negative: Conditioning | None = None,
    model: str = "tiny-shapes-diffusion",
    scheduler: Scheduler = "dpm++",
    steps: Annotated[int, Field(ge=1, le=1000)] = 20,
    guidance: Annotated[float, Field(ge=0, le=50)] = 3.0,
    width: Annotated[int, Field(ge=16, le=4096, multiple_of=8)] = 64,
    height: Annotated[int, Field(ge=16, le=4096, multiple_of=8)] = 64,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: int = 0,
    object_fill: Annotated[float, Field(gt=0.05, le=1.0)] = 0.56,
    background: Literal["flat", "prompt"] = "flat",
    background_weight: Annotated[float, Field(gt=0, le=10)] = 0.1,
    decode: Literal["windows", "canvas"] = "windows",
) -> ImageBatch:
    """Regional generation: each object of a layout denoised with its own prompt in its own window, fused each step.

    ``conditioning`` holds one prompt per region, background first (what
    ``layout.prompts`` makes, encoded by ``encode.text``). Works with any
    diffusers UNet + VAE folder. ``background="flat"`` keeps the canvas outside
    the windows on the layout's background colour (encoded by the VAE);
    ``"prompt"`` denoises the whole canvas with the background prompt too.

    Args:
        layout: the planned layout.
        conditioning: region prompts, encoded: background, then each object.
        negative: the unconditional input (default: zeros, as the zoo models were trained with).
        model: a model name or a diffusers folder.
        scheduler: the sampler.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        width: image width.
        height: image height.
        batch_size: images to make.
        seed: the first image's seed.
        object_fill: the share of its frame the model draws one object over; windows are boxes over this.
        background: how the canvas outside the windows is made.
        background_weight: with ``background="prompt"``: the background prompt's weight inside windows.
        decode: ``windows`` decodes each object's window on its own, at the size the VAE was trained on
            (a small VAE with group normalisation shifts colours on a larger canvas), over the flat
            background (or the decoded canvas); ``canvas`` decodes the canvas in one piece.
    """
    import diffusers
    import torch

    if len(conditioning) != len(layout) + 1:
        raise ValueError(f"conditioning: {len(conditioning)} prompts for a layout of {len(layout)} objects; "
                         f"give {len(layout) + 1} (the background, then each object, as layout.prompts makes)")
    if not layout.objects:
        raise ValueError("layout: no objects to generate")
    loaded = _load(context, model)
    unet, vae = loaded["unet"], loaded["vae"]
    if unet.config.addition_embed_type:  # SDXL: pooled embeddings and time ids this loop does not pass
        raise ValueError(f"model: {model!r} is an SDXL-style UNet (added text/time embeddings); generate it with "
                         "diffusion.generate and link the layout into its 'layout' input")
    if conditioning.width != unet.config.cross_attention_dim:
        raise ValueError(f"conditioning: width {conditioning.width} (encoder {conditioning.encoder!r}), but model "
                         f"{model!r} expects {unet.config.cross_attention_dim}")
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unit = 2 ** (len(unet.config.block_out_channels) - 1)
    if width % (vae_factor * unit) or height % (vae_factor * unit):
        raise ValueError(f"width/height: {width}x{height} must be multiples of {vae_factor * unit} for model {model!r}")
    latent_h, latent_w = height // vae_factor, width // vae_factor
    known = None
    if background == "flat":
        if layout.background not in COLOUR_RGB:
            raise ValueError(f"layout: background {layout.background!r} is not a colour name "
                             f"({', '.join(COLOUR_RGB)}); use background='prompt'")
        known = _flat_latent(vae, COLOUR_RGB[layout.background], height, width)
    negative_states = negative.states[:1] if negative is not None else torch.zeros_like(conditioning.states[:1])
    negative_pooled = None
    if conditioning.pooled is not None:
        negative_pooled = negative.pooled[:1] if negative is not None and negative.pooled is not None \
            else torch.zeros_like(conditioning.pooled[:1])
    windows = latent_windows(layout, latent_h, latent_w, unit, object_fill)
    scheduler_class = getattr(diffusers, _SCHEDULERS[scheduler])
    images, total = [], batch_size * steps
    for index in range(batch_size):
        request = RegionalRequest(windows, conditioning.states, conditioning.pooled, negative_states,
                                  negative_pooled, known, image_seed(seed, index), steps, guidance, latent_h,
                                  latent_w, background_weight)

        def report(step: int, _: int, done: int = index * steps) -> None:
            context.check_cancelled()
            context.progress(done + step, total, "regional denoising")

        latents = regional_latents(unet, scheduler_class.from_config(loaded["scheduler"]), request, report)
        flat = COLOUR_RGB[layout.background] if background == "flat" else None
        images.append(_decode(vae, latents, windows if decode == "windows" else [], vae_factor, flat))
    return ImageBatch(tuple(images), (layout.prompt,) * batch_size if layout.prompt else ())
