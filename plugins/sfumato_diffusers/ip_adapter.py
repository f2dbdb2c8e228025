"""IP-Adapter: an image prompt next to the text prompt.

``diffusion.ip_adapter`` makes an :class:`ImagePrompt` (reference images, an
IP-Adapter ``.safetensors`` file, the CLIP vision encoder folder it was trained
with, a scale and an optional mask); ``diffusion.generate`` encodes the images
with the vision encoder and lets the UNet attend to them through diffusers'
IP-Adapter attention processors. The shared UNet carries those processors only
for the run: they are swapped in, and the UNet's own processors put back after,
so a run without an image prompt on the same cached model is unchanged. The
adapter is converted once per model and file; changing the scale reloads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from sfumato import CachePolicy, Field, ImageBatch, ReadablePath, RunContext, ValidationContext, node

from .loading import DiffusionModel
from .lora import family_of_width, file_fingerprint
from .singlefile import tensor_shapes


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """Reference images and the IP-Adapter that turns them into something the UNet attends to."""

    images: ImageBatch
    adapter: str
    sha256: str
    encoder: str
    scale: float = 1.0
    mask: ImageBatch | None = None


def inspect_ip_adapter(path: Path) -> int | None:
    """Check an IP-Adapter file's header (no weights); its cross-attention width (``None`` if unknown)."""
    shapes = tensor_shapes(path, "IP-Adapters")
    if not any(k.startswith("image_proj.") for k in shapes) or not any(k.startswith("ip_adapter.") for k in shapes):
        if any("lora" in k for k in shapes):
            raise ValueError(f"{path} is a LoRA, not an IP-Adapter")
        raise ValueError(f"{path} is not an IP-Adapter (expected image_proj.* and ip_adapter.* keys)")
    key = "ip_adapter.1.to_k_ip.weight"
    return int(shapes[key][1]) if key in shapes and len(shapes[key]) == 2 else None


def read_vision_encoder_config(folder: Path) -> dict[str, Any]:
    """A CLIP vision encoder folder's config; ``ValueError`` saying why the folder is not one."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(f"{folder} is not a model folder (no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "clip_vision_model":
        raise ValueError(f"{folder} holds a {config.get('model_type') or 'model of unknown type'}, "
                         "not a CLIP vision encoder (CLIPVisionModelWithProjection)")
    return config


def _describe(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """Check the adapter file and the encoder folder before anything loads."""
    width = None
    if inputs.get("adapter"):
        try:
            width = inspect_ip_adapter(Path(str(inputs["adapter"])).expanduser())
        except ValueError as error:
            context.problem(str(error), "adapter")
    if inputs.get("encoder"):
        folder = context.model_folder(str(inputs["encoder"]))
        try:
            if folder is None:
                raise ValueError(f"vision encoder {inputs['encoder']!r} not found")
            config = read_vision_encoder_config(folder)
            proj = config.get("projection_dim")
            if inputs.get("adapter") and width is not None and proj:
                _check_projection(Path(str(inputs["adapter"])).expanduser(), int(proj))
        except ValueError as error:
            context.problem(str(error), "encoder")
    return {"image_prompt": {"family": family_of_width(width)}} if width else {}


def _check_projection(adapter: Path, projection_dim: int) -> None:
    from safetensors import safe_open

    with safe_open(str(adapter), framework="pt") as handle:
        if "image_proj.proj.weight" in handle.keys():  # noqa: SIM118
            wanted = handle.get_slice("image_proj.proj.weight").get_shape()[1]
            if wanted != projection_dim:
                raise ValueError(f"the encoder's image embeddings have {projection_dim} dimensions, but the "
                                 f"IP-Adapter expects {wanted}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@node("diffusion.ip_adapter", category="generate", output="image_prompt", describe_outputs=_describe,
      cache=CachePolicy(fingerprint=file_fingerprint("adapter"), to_disk=False))
def ip_adapter(
    images: ImageBatch,
    adapter: ReadablePath,
    encoder: str,
    scale: Annotated[float, Field(ge=0, le=5)] = 1.0,
    mask: ImageBatch | None = None,
) -> ImagePrompt:
    """An image prompt for ``diffusion.generate``: generate like these images, next to the text prompt.

    Args:
        images: the reference image(s).
        adapter: the IP-Adapter weights (``.safetensors``, ``image_proj.*`` and ``ip_adapter.*`` keys).
        encoder: the CLIP vision encoder it was trained with (a folder: CLIPVisionModelWithProjection).
        scale: how strongly the image prompt acts (0: not at all).
        mask: where the image prompt acts (white), one mask per reference image.
    """
    if len(images) == 0:
        raise ValueError("no reference image")
    if mask is not None and len(mask) != len(images):
        raise ValueError(f"{len(mask)} masks for {len(images)} reference images; give one mask per image")
    file = Path(adapter).expanduser()
    inspect_ip_adapter(file)
    return ImagePrompt(images, str(file.resolve()), _sha256(file), encoder, float(scale), mask)


# -- applying an image prompt ------------------------------------------------------------------------


def load_vision_encoder(context: RunContext, name: str) -> tuple[Any, Any]:
    """The CLIP vision encoder and its image processor (once per process, through the model manager)."""
    from sfumato import torch_dtype

    path = context.models.resolve(name)
    dtype = torch_dtype(context.dtype)

    def load() -> tuple[Any, Any]:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection.from_pretrained(str(path), dtype=dtype).eval().to(context.device)
        if isinstance(path, Path) and not (path / "preprocessor_config.json").exists():
            size = int(model.config.image_size)  # a bare encoder folder: CLIP's preprocessing at its size
            processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        else:
            processor = CLIPImageProcessor.from_pretrained(str(path))
        return model, processor

    return context.models.get(f"clip-vision:{path}", context.device, context.dtype, load)


def image_prompt_embeddings(context: RunContext, diffusion: DiffusionModel, prompt: ImagePrompt | None,
                            count: int, width: int, height: int) -> tuple[Any, Any]:
    """``(image_embeds (count, k, D), masks)`` for the loop, or ``(None, None)`` without an image prompt."""
    import torch

    if prompt is None:
        return None, None
    encoder, processor = load_vision_encoder(context, prompt.encoder)
    pixels = processor(images=[im.convert("RGB") for im in prompt.images.images], return_tensors="pt").pixel_values
    with torch.inference_mode():
        embeds = encoder(pixels.to(diffusion.device, encoder.dtype)).image_embeds
    embeds = embeds.to(diffusion.dtype)[None].repeat(count, 1, 1)
    masks = None
    if prompt.mask is not None:
        from diffusers.image_processor import IPAdapterMaskProcessor

        masks = IPAdapterMaskProcessor().preprocess(list(prompt.mask.images), height=height, width=width)
        masks = masks.reshape(1, len(prompt.mask), *masks.shape[-2:]).to(diffusion.device, diffusion.dtype)
    return embeds, masks


_guard = threading.Lock()
_loaded: dict[tuple[int, str], tuple[dict[str, Any], Any]] = {}


@contextlib.contextmanager
def ip_adapter_applied(model: DiffusionModel, prompt: ImagePrompt | None, lock: Any) -> Iterator[None]:
    """Give the UNet ``prompt``'s IP-Adapter for the run (nothing without one); its own processors after."""
    if prompt is None:
        yield
        return
    unet = model.unet
    with lock:
        own_processors = dict(unet.attn_processors)
        own_projection, own_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
        key = (id(unet), prompt.sha256)
        try:  # whatever happens (an adapter that does not fit included), the UNet gets its own processors back
            with _guard:
                loaded = _loaded.get(key)
            if loaded is None:
                loaded = _load_adapter(model, prompt)
                with _guard:
                    _loaded[key] = loaded
            else:
                unet.set_attn_processor(dict(loaded[0]))
                unet.encoder_hid_proj = loaded[1]
                unet.config.encoder_hid_dim_type = "ip_image_proj"
            for processor in unet.attn_processors.values():
                if hasattr(processor, "scale") and isinstance(processor.scale, list):
                    processor.scale = [prompt.scale] * len(processor.scale)
            yield
        finally:
            unet.set_attn_processor(own_processors)
            unet.encoder_hid_proj = own_projection
            unet.config.encoder_hid_dim_type = own_type


def _load_adapter(model: DiffusionModel, prompt: ImagePrompt) -> tuple[dict[str, Any], Any]:
    """Convert an IP-Adapter file into the UNet's processors and image projection (diffusers' loader)."""
    from safetensors.torch import load_file

    tensors = load_file(prompt.adapter)
    state = {"image_proj": {k.removeprefix("image_proj."): v for k, v in tensors.items() if k.startswith("image_proj.")},
             "ip_adapter": {k.removeprefix("ip_adapter."): v for k, v in tensors.items() if k.startswith("ip_adapter.")}}
    try:
        model.unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"IP-Adapter {prompt.adapter} does not fit model {model.name!r}: {error}") from None
    model.unet.to(model.device, model.dtype)
    return dict(model.unet.attn_processors), model.unet.encoder_hid_proj
