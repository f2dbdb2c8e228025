"""Loading single-file checkpoints in their original layouts through diffusers components.

Stable Diffusion 1.x/2.x/XL files (the LDM layout: ``model.diffusion_model.``,
``first_stage_model.``, ``cond_stage_model.``) and SD3 files (Stability's
MMDiT layout) go through diffusers' ``from_single_file``; Flux files (Black
Forest Labs' layout) are converted here, with the width read from the
model's config, then handed to it in diffusers' names. Every file loads with
the configs of a diffusers folder of its family from the model library
(``library.config_folder_for``); nothing is fetched from a hub. What a file
is, is ``singlefile``'s to tell, from its header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sfumato import SfumatoError

from .singlefile import read_header


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
                names = ("to_q", "to_k", "to_v") if part.startswith("img") else \
                    ("add_q_proj", "add_k_proj", "add_v_proj")
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
            weights = {k: handle.get_tensor(k) for k in handle.keys()  # noqa: SIM118 - a safe_open handle
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
            text_weights = {k: handle.get_tensor(k) for k in handle.keys()  # noqa: SIM118 - a safe_open handle
                            if k.startswith("cond_stage_model.")}
        components["text_encoder"] = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, text_weights, subfolder="text_encoder", config=str(config), torch_dtype=dtype,
            local_files_only=True)
        components["tokenizer"] = AutoTokenizer.from_pretrained(config / "tokenizer")
    return components
