"""What a ``.safetensors`` file is, from its keys and shapes alone.

Model sites hand out single files: whole checkpoints in the original (LDM)
layout, LoRAs in diffusers, kohya or peft key formats, ControlNets and
IP-Adapters. The safetensors header (a JSON table of names, dtypes and
shapes at the start of the file) tells them apart without torch and without
reading the weights, so a library of many gigabytes is scanned in moments.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfumato import SfumatoError

#: The header is read whole; anything larger than this is not a safetensors header.
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class FileKind:
    """``kind`` (checkpoint, unet, lora, controlnet, ip-adapter) and ``family`` (sd, sd2, sdxl, sd3, flux; ``""`` unknown)."""

    kind: str
    family: str


def require_safetensors(name: str, path: Path) -> None:
    """Refuse a model file that is not ``.safetensors`` (:class:`ModelNotFoundError` naming what to do)."""
    from sfumato import ModelNotFoundError

    if path.suffix != ".safetensors":
        raise ModelNotFoundError(
            f"model {name!r} is a {path.suffix or 'suffix-less'} file: sfumato loads single-file checkpoints from "
            ".safetensors only (no pickled .ckpt/.bin/.pt, no .gguf); give a .safetensors file or a diffusers folder")


def read_header(path: Path) -> dict[str, Any]:
    """The tensor table of a safetensors file: ``{name: {"dtype", "shape", ...}}`` (metadata left out)."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise ValueError("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise SfumatoError(f"{path} is not a readable .safetensors file: {error}") from None
    if not isinstance(header, dict):
        raise SfumatoError(f"{path} is not a .safetensors file: its header is not a table")
    header.pop("__metadata__", None)
    return header


def tensor_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the safetensors file ``path``, from its header only.

    Raises ``ValueError`` saying why it is not one; ``what`` names the kind of
    file for the message (``"LoRAs"``, ``"IP-Adapters"``).
    """
    if path.suffix != ".safetensors":
        raise ValueError(f"{path} is not a .safetensors file ({what} load from safetensors only)")
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        header = read_header(path)
    except SfumatoError as error:
        raise ValueError(str(error)) from None
    return {key: tuple(entry.get("shape", ())) for key, entry in header.items() if isinstance(entry, dict)}


def _shape(header: dict[str, Any], key: str) -> list[int]:
    return list(header.get(key, {}).get("shape", []))


def _cross_attention_width(header: dict[str, Any], prefix: str = "") -> int:
    """The text width a UNet attends to: the input size of a cross-attention key projection."""
    for key, value in header.items():
        if key.startswith(prefix) and key.endswith(("attn2.to_k.weight", "attn2.to_k.lora_A.weight",
                                                    "attn2_to_k.lora_down.weight")):
            shape = value.get("shape", [])
            if len(shape) == 2:
                return int(shape[1])
    return 0


def _family_of_width(width: int, sdxl_hint: bool) -> str:
    if sdxl_hint or width == 2048:
        return "sdxl"
    return {768: "sd", 1024: "sd2"}.get(width, "sd" if width else "")


def detect(header: dict[str, Any]) -> FileKind:
    """Kind and family of a single file from its tensor names and shapes.

    Raises :class:`SfumatoError` naming a few keys when the file is none of
    the layouts sfumato knows.
    """
    keys = list(header)
    has = lambda *parts: any(part in key for key in keys for part in parts)
    starts = lambda *prefixes: any(key.startswith(prefixes) for key in keys)
    if starts("image_proj.", "ip_adapter.") or has(".to_k_ip."):
        width = next((int(v["shape"][1]) for k, v in header.items() if k.endswith("to_k_ip.weight")), 0)
        return FileKind("ip-adapter", _family_of_width(width, False))
    if has("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up") or starts("lora_unet_", "lora_te"):
        if has("single_transformer_blocks", "double_blocks", "single_blocks"):
            return FileKind("lora", "flux")
        if has("joint_blocks", "context_block") or (has("transformer_blocks") and has("context_embedder")):
            return FileKind("lora", "sd3")
        sdxl = has("lora_te2_", "text_encoder_2", "add_embedding", "label_emb")
        return FileKind("lora", _family_of_width(_cross_attention_width(header), sdxl))
    if starts("control_model.") or has("controlnet_cond_embedding", "controlnet_down_blocks", "input_hint_block"):
        sdxl = has("add_embedding", "label_emb")
        return FileKind("controlnet", _family_of_width(_cross_attention_width(header), sdxl))
    if starts("model.diffusion_model.", "double_blocks.", "joint_blocks.", "input_blocks."):
        if has("double_blocks."):
            return FileKind("checkpoint", "flux")
        if has("joint_blocks."):
            return FileKind("checkpoint", "sd3")
        sdxl = has("conditioner.embedders.1", "diffusion_model.label_emb.")
        if sdxl and starts("conditioner.embedders.0.model.") and not has("conditioner.embedders.1"):
            return FileKind("refiner", "sdxl")  # CLIP-G (OpenCLIP) alone: sd_xl_refiner's layout
        return FileKind("checkpoint", _family_of_width(_cross_attention_width(header), sdxl))
    if starts("conv_in.") and has("down_blocks.", "up_blocks."):
        return FileKind("unet", _family_of_width(_cross_attention_width(header), has("add_embedding.")))
    if starts("transformer_blocks.", "single_transformer_blocks.", "x_embedder."):
        return FileKind("transformer", "flux" if has("single_transformer_blocks.") else "sd3")
    sample = ", ".join(sorted(keys)[:4]) or "no tensors"
    raise SfumatoError(f"cannot tell what model this is from its keys (first: {sample}): not a Stable Diffusion "
                       "1.x/2.x/XL, SD3 or Flux checkpoint, nor a LoRA, ControlNet or IP-Adapter sfumato knows")


def detect_file(path: Path) -> FileKind:
    """Kind and family of a ``.safetensors`` file; :class:`SfumatoError` naming the file when unknown."""
    try:
        return detect(read_header(path))
    except SfumatoError as error:
        message = str(error)
        raise SfumatoError(message if str(path) in message else f"{path}: {message}") from None


#: Conditioning family of each checkpoint family (SD 2.x takes one encoder's states, like SD 1.x).
CONDITIONING_FAMILY = {"sd": "sd", "sd2": "sd", "sdxl": "sdxl"}
#: The node that generates with a transformer family's checkpoint.
TRANSFORMER_NODES = {"sd3": "sd3.generate", "flux": "flux.generate"}


def _what(found: FileKind) -> str:
    return f"a {found.family} {found.kind}" if found.family else f"a {found.kind}"


def checkpoint_family(path: Path) -> str:
    """The family of a single-file checkpoint that ``diffusion.generate`` can load, or :class:`SfumatoError`."""
    return checkpoint_kind(path).family


def checkpoint_kind(path: Path) -> FileKind:
    """Kind (``checkpoint``, or an SDXL ``refiner``) and family of a single-file UNet checkpoint, or
    :class:`SfumatoError` naming what the file is instead."""
    found = detect_file(path)
    if found.kind not in ("checkpoint", "refiner") or found.family not in CONDITIONING_FAMILY:
        hint = " (apply LoRAs with diffusion.lora)" if found.kind == "lora" else \
            f" (generate with {TRANSFORMER_NODES[found.family]})" if found.family in TRANSFORMER_NODES else ""
        raise SfumatoError(f"{path} is {_what(found)}, not a Stable Diffusion 1.x/2.x/XL checkpoint that "
                           f"diffusion.generate loads{hint}")
    return found


def transformer_checkpoint_family(path: Path, family: str) -> str:
    """Check that ``path`` is a single-file ``family`` (``sd3``, ``flux``) checkpoint; :class:`SfumatoError` if not."""
    found = detect_file(path)
    if found.kind not in ("checkpoint", "transformer") or found.family != family:
        node_type = TRANSFORMER_NODES[family]
        hint = " (apply LoRAs with diffusion.lora)" if found.kind == "lora" else ""
        if found.kind == "checkpoint":
            other = TRANSFORMER_NODES.get(found.family, "diffusion.generate" if found.family else "")
            hint = f" (generate with {other})" if other else ""
        raise SfumatoError(f"{path} is {_what(found)}, not a {family} checkpoint that {node_type} loads{hint}")
    return found.family


def _swap_halves(tensor: Any) -> Any:
    """The original adaLN layouts put shift before scale, diffusers scale before shift (its own inverse)."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


#: Flux (BFL layout) -> diffusers names that are a plain rename (per weight and bias).
_FLUX_RENAMES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
}
_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
_FLUX_SINGLE = {"modulation.lin": "norm.linear", "norm.query_norm.scale": "attn.norm_q.weight",
                "norm.key_norm.scale": "attn.norm_k.weight", "linear2": "proj_out"}


def flux_checkpoint_to_diffusers(checkpoint: dict[str, Any], inner_dim: int) -> dict[str, Any]:
    """A Flux transformer in Black Forest Labs' layout (``double_blocks.``, ``single_blocks.``) in diffusers' names.

    What diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``
    does, with the attention width ``inner_dim`` taken from the model's
    config: diffusers 0.42 fixes it at FLUX.1's 3072, which splits no other
    width (so a smaller Flux-architecture file could not load).
    """
    import re

    converted: dict[str, Any] = {}
    for key, tensor in checkpoint.items():
        name = key.removeprefix("model.diffusion_model.")
        stem, _, kind = name.rpartition(".")
        if stem in _FLUX_RENAMES:
            converted[f"{_FLUX_RENAMES[stem]}.{kind}"] = tensor
        elif stem == "final_layer.adaLN_modulation.1":
            converted[f"norm_out.linear.{kind}"] = _swap_halves(tensor)
        elif match := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", name):
            block, rest = f"transformer_blocks.{match[1]}.", match[2]
            part, _, kind = rest.rpartition(".")
            if part in ("img_attn.qkv", "txt_attn.qkv"):
                names = ("to_q", "to_k", "to_v") if part.startswith("img") else ("add_q_proj", "add_k_proj", "add_v_proj")
                for target, piece in zip(names, tensor.chunk(3, dim=0)):
                    converted[f"{block}attn.{target}.{kind}"] = piece
            elif rest in _FLUX_DOUBLE:  # the q/k norms: a "scale" with no weight/bias suffix
                converted[block + _FLUX_DOUBLE[rest]] = tensor
            elif part in _FLUX_DOUBLE:
                converted[f"{block}{_FLUX_DOUBLE[part]}.{kind}"] = tensor
            else:
                raise SfumatoError(f"unexpected key {key!r} in a Flux checkpoint")
        elif match := re.fullmatch(r"single_blocks\.(\d+)\.(.+)", name):
            block, rest = f"single_transformer_blocks.{match[1]}.", match[2]
            part, _, kind = rest.rpartition(".")
            if part == "linear1":  # q, k, v and the MLP's input, in one matrix
                mlp = int(tensor.shape[0]) - 3 * inner_dim
                for target, piece in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
                                         tensor.split([inner_dim, inner_dim, inner_dim, mlp], dim=0)):
                    converted[f"{block}{target}.{kind}"] = piece
            elif rest in _FLUX_SINGLE:
                converted[block + _FLUX_SINGLE[rest]] = tensor
            elif part in _FLUX_SINGLE:
                converted[f"{block}{_FLUX_SINGLE[part]}.{kind}"] = tensor
            else:
                raise SfumatoError(f"unexpected key {key!r} in a Flux checkpoint")
    return converted


def load_transformer_checkpoint(path: Path, config: Path, family: str, dtype: Any) -> dict[str, Any]:
    """The transformer (and, when the file has one, the VAE) of a single-file SD3 or Flux checkpoint.

    ``config`` is a diffusers pipeline folder of the same family (its
    ``transformer/`` and ``vae/`` configs; its weights are not read). SD3
    files (``model.diffusion_model.joint_blocks…``) go through diffusers'
    ``from_single_file``; Flux files (``double_blocks…``, with or without the
    ``model.diffusion_model.`` prefix) are converted by
    :func:`flux_checkpoint_to_diffusers` with the config's width and handed to
    it already in diffusers' names. Nothing is fetched from a hub.
    """
    import diffusers
    from diffusers import AutoencoderKL

    cls = diffusers.SD3Transformer2DModel if family == "sd3" else diffusers.FluxTransformer2DModel
    options = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    header = read_header(path)
    if family == "flux":
        from safetensors import safe_open

        settings = cls.load_config(str(config), subfolder="transformer", local_files_only=True)
        inner = int(settings["num_attention_heads"]) * int(settings["attention_head_dim"])
        with safe_open(str(path), "pt") as handle:  # the transformer's tensors only, not a bundled VAE or encoders
            weights = {k: handle.get_tensor(k) for k in handle.keys()
                       if k.removeprefix("model.diffusion_model.").split(".")[0] in _FLUX_TOP_LEVEL}
        source: Any = flux_checkpoint_to_diffusers(weights, inner)
    else:
        source = str(path)
    parts: dict[str, Any] = {"transformer": cls.from_single_file(source, subfolder="transformer", **options)}
    if any(key.startswith("first_stage_model.") for key in header):
        parts["vae"] = AutoencoderKL.from_single_file(str(path), subfolder="vae", **options)
    return parts


#: The first name parts of a Flux transformer's tensors in Black Forest Labs' layout.
_FLUX_TOP_LEVEL = {"time_in", "vector_in", "guidance_in", "txt_in", "img_in", "final_layer", "double_blocks",
                   "single_blocks"}


def load_checkpoint(path: Path, config: Path, dtype: Any) -> dict[str, Any]:
    """UNet, VAE and (SD 1.x/2.x) text encoder from one original-layout file, configured from ``config``.

    ``config`` is a diffusers folder of the same family (its ``unet/``,
    ``vae/``, ``scheduler/``, ``text_encoder/`` and ``tokenizer/`` configs;
    its weights are not read). Nothing is fetched from a hub.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    options = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    components: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_single_file(str(path), subfolder="unet", **options),
        "vae": AutoencoderKL.from_single_file(str(path), subfolder="vae", **options),
    }
    header = read_header(path)
    if any(key.startswith("cond_stage_model.") for key in header) and (config / "text_encoder").is_dir():
        from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
        from safetensors import safe_open
        from transformers import AutoTokenizer, CLIPTextModel

        with safe_open(str(path), "pt") as handle:  # only the text encoder's tensors, not the whole file
            text_weights = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("cond_stage_model.")}
        components["text_encoder"] = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, text_weights, subfolder="text_encoder", config=str(config), torch_dtype=dtype,
            local_files_only=True)
        components["tokenizer"] = AutoTokenizer.from_pretrained(config / "tokenizer")
    return components
