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


def conditioning_width(header: dict[str, Any]) -> int:
    """The text width a checkpoint's denoiser attends to, from its header (0 when it does not say).

    A UNet's cross-attention key projection takes it; an SD3 or Flux
    transformer's context embedder (``context_embedder``, BFL's ``txt_in``).
    """
    for key in ("model.diffusion_model.context_embedder.weight", "context_embedder.weight",
                "model.diffusion_model.txt_in.weight", "txt_in.weight"):
        shape = _shape(header, key)
        if len(shape) == 2:
            return int(shape[1])
    return _cross_attention_width(header, "model.diffusion_model.")


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
