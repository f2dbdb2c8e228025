"""Tiny random models built from configs and saved to folders, so tests load them
through exactly the code a user's model folder goes through."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("a an the red green blue yellow purple white black gray circle square triangle on of in "
         "background picture photo cat dog big small").split()


def save_word_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A fast word-level tokenizer (with offsets, as encode.text needs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_length)
    fast.save_pretrained(folder)


def save_tiny_clip(folder: Path, width: int = 32) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(WORDS) + 4, max_position_embeddings=16, bos_token_id=2,
                            eos_token_id=3, pad_token_id=0, projection_dim=width)
    CLIPTextModel(config).save_pretrained(folder)
    save_word_tokenizer(folder)
    return folder


def save_tiny_t5(folder: Path, width: int = 16) -> Path:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(WORDS) + 4, d_model=width, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=3)
    T5EncoderModel(config).save_pretrained(folder)
    save_word_tokenizer(folder)
    return folder


def save_tiny_causal_lm(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(WORDS) + 4, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=2, eos_token_id=3, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    save_word_tokenizer(folder, max_length=64)
    return folder


def _save_unet_vae_scheduler(folder: Path, cross_attention_dim: int, class_projection: bool) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    extra = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": cross_attention_dim} \
        if class_projection else {}
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32, **extra,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 32], layers_per_block=1,
                  latent_channels=4, norm_num_groups=16, sample_size=16).save_pretrained(folder / "vae")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                  timestep_spacing="leading").save_pretrained(folder / "scheduler")


def save_tiny_sd_pipeline(folder: Path) -> Path:
    """A Stable-Diffusion-layout folder: unet, vae, scheduler, text_encoder, tokenizer."""
    _save_unet_vae_scheduler(folder, cross_attention_dim=32, class_projection=False)
    save_tiny_clip(folder / "text_encoder")
    save_word_tokenizer(folder / "tokenizer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def save_tiny_zoo_diffusion(folder: Path, vocabulary: dict[str, list[str]] | None = None) -> Path:
    """A zoo-layout folder conditioned on all-MiniLM-L6-v2 (384-d), like tiny-shapes-diffusion."""
    _save_unet_vae_scheduler(folder, cross_attention_dim=384, class_projection=True)
    info = {"family": "diffusion", "encoder": "all-MiniLM-L6-v2", "unconditional": "zeros"}
    (folder / "sfumato.json").write_text(json.dumps({**info, **({"vocabulary": vocabulary} if vocabulary else {})}))
    return folder


def save_tiny_zoo_generator(folder: Path, kind: str, vocabulary: dict[str, list[str]] | None = None) -> Path:
    """A random conditional VAE or GAN checkpoint (config.json + model.safetensors)."""
    import torch
    from safetensors.torch import save_file

    from sfumato_zoo import networks

    torch.manual_seed(0)
    module = networks.ConditionalVAE(z_dim=8, width=16) if kind == "vae" else networks.ConditionalGenerator(z_dim=8, width=16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, folder / "model.safetensors")
    config = {"kind": "conditional-vae" if kind == "vae" else "conditional-gan", **module.config}
    (folder / "config.json").write_text(json.dumps(config))
    info = {"family": kind, "encoder": "all-MiniLM-L6-v2", **({"vocabulary": vocabulary} if vocabulary else {})}
    (folder / "sfumato.json").write_text(json.dumps(info))
    return folder


def save_tiny_clip_with_projection(folder: Path, width: int = 32, projection_dim: int = 32) -> Path:
    """A CLIP text encoder with its projection (SDXL's second encoder, SD3's CLIP-L/G)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(WORDS) + 4, max_position_embeddings=16, bos_token_id=2,
                            eos_token_id=3, pad_token_id=0, projection_dim=projection_dim)
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    save_word_tokenizer(folder)
    return folder


def _save_tiny_sdxl_denoiser(folder: Path, *, seed: int, text_width: int, time_ids: int) -> None:
    """An SDXL-layout UNet (``text_width`` wide text, ``time_ids`` time ids of 8, CLIP-G's 32-wide pooled
    projection), a small VAE and an Euler scheduler, saved under ``folder``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=time_ids * 8 + 32,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 32], layers_per_block=1,
                  latent_channels=4, norm_num_groups=16, sample_size=16).save_pretrained(folder / "vae")
    EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           timestep_spacing="leading", steps_offset=1).save_pretrained(folder / "scheduler")


def save_tiny_sdxl_pipeline(folder: Path) -> Path:
    """An SDXL-layout folder: a UNet with added text/time embeddings and two CLIP text encoders.

    The UNet's cross-attention width is the two encoders' widths side by side
    (32 + 32) and its added embedding takes six time ids (8 each) plus the
    second encoder's 32-wide pooled projection, as in SDXL.
    """
    _save_tiny_sdxl_denoiser(folder, seed=0, text_width=64, time_ids=6)
    save_tiny_clip(folder / "text_encoder")
    save_tiny_clip_with_projection(folder / "text_encoder_2")
    save_word_tokenizer(folder / "tokenizer")
    save_word_tokenizer(folder / "tokenizer_2")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
    }))
    return folder


def _unet_to_ldm(state: dict, config: dict) -> dict:
    """A diffusers UNet state dict in the original (LDM) key layout, as model sites distribute it."""
    import re

    per_level = config["layers_per_block"] + 1
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    resnet_parts = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                    ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    whole = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    converted = {}
    for key, value in state.items():
        new = key
        for old, ldm in whole.items():
            if key.startswith(old + "."):
                new = ldm + key[len(old):]
        if "resnets" in key:
            for old, ldm in resnet_parts:
                new = new.replace(f".{old}.", f".{ldm}.")
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", new):
            i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            new = f"input_blocks.{per_level * i + j + 1}.{0 if part == 'resnets' else 1}.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", new):
            new = f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", new):
            i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            new = f"output_blocks.{per_level * i + j}.{0 if part == 'resnets' else 1}.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new):
            i = int(m[1])
            new = f"output_blocks.{per_level * i + per_level - 1}.{2 if up_has_attention[i] else 1}.{m[2]}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", new):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", new):
            new = f"middle_block.{2 * int(m[1])}.{m[2]}"
        converted["model.diffusion_model." + new] = value
    return converted


def _vae_to_ldm(state: dict, config: dict) -> dict:
    """A diffusers AutoencoderKL state dict in the original (LDM) layout (1x1 conv attention weights)."""
    import re

    levels = len(config["block_out_channels"])
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    converted = {}
    for key, value in state.items():
        new = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", new):
            new = f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", new):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", new):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        converted["first_stage_model." + new] = value
    return converted


def save_sd_single_file(folder: Path, path: Path) -> Path:
    """An SD 1.x diffusers folder as one ``.safetensors`` checkpoint in the original layout (UNet, VAE, CLIP)."""
    from safetensors.torch import load_file, save_file

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    tensors = {**_unet_to_ldm(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), unet_config),
               **_vae_to_ldm(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"), vae_config)}
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        tensors["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def save_tiny_flux_pipeline(folder: Path) -> Path:
    """A Flux-layout folder: a 1+1-layer FluxTransformer2DModel, a 1-channel VAE, CLIP and T5 (both 32 wide)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                           num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                           axes_dims_rope=[4, 4, 8]).save_pretrained(folder / "transformer")
    AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                  latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                  shift_factor=0.0609, scaling_factor=1.5035).save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    save_tiny_clip(folder / "text_encoder")
    save_tiny_t5(folder / "text_encoder_2", width=32)
    save_word_tokenizer(folder / "tokenizer")
    save_word_tokenizer(folder / "tokenizer_2")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    return folder


def save_tiny_sd3_pipeline(folder: Path, num_layers: int = 1, projection_dim: int = 32) -> Path:
    """An SD3-layout folder: a 1-layer SD3 MMDiT, CLIP-L and CLIP-G (16 wide, 32-wide projections) and T5 (32).

    As in SD3, the two CLIPs' states side by side (16 + 16) are padded to T5's
    width and put before T5's tokens; the pooled input is both projections (64).
    """
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=num_layers, attention_head_dim=8,
                          num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                          pooled_projection_dim=2 * projection_dim,
                          out_channels=4).save_pretrained(folder / "transformer")
    AutoencoderKL(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                  latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                  shift_factor=0.0609, scaling_factor=1.5035).save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(folder / "scheduler")
    save_tiny_clip_with_projection(folder / "text_encoder", width=16, projection_dim=projection_dim)
    save_tiny_clip_with_projection(folder / "text_encoder_2", width=16, projection_dim=projection_dim)
    save_tiny_t5(folder / "text_encoder_3", width=32)
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        save_word_tokenizer(folder / name)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    return folder


def save_tiny_sdxl_refiner(folder: Path) -> Path:
    """An SDXL-refiner-layout folder: a UNet taking CLIP-G alone (32 wide) and five time ids
    (original size, crop corner, aesthetic score), the second encoder only, as stabilityai's refiner."""
    _save_tiny_sdxl_denoiser(folder, seed=1, text_width=32, time_ids=5)
    save_tiny_clip_with_projection(folder / "text_encoder_2")
    save_word_tokenizer(folder / "tokenizer_2")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": True,
        "force_zeros_for_empty_prompt": False, "text_encoder": [None, None], "tokenizer": [None, None],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
    }))
    return folder


def _swap_halves(tensor):
    """SD3's and Flux's original adaLN layouts put shift before scale; diffusers scale before shift."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _sd3_to_original(state: dict, num_layers: int) -> dict:
    """A diffusers SD3Transformer2DModel state dict in Stability's original (MMDiT) layout, as sd3.5 files have it."""
    import torch

    out = {"pos_embed": state["pos_embed.pos_embed"]}
    renames = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
               "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2", "context_embedder": "context_embedder",
               "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
               "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}
    for kind in ("weight", "bias"):
        for new, old in renames.items():
            out[f"{old}.{kind}"] = state[f"{new}.{kind}"]
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(state[f"norm_out.linear.{kind}"])
        for i in range(num_layers):
            block, joint, last = f"transformer_blocks.{i}.", f"joint_blocks.{i}.", i == num_layers - 1
            out[f"{joint}x_block.attn.qkv.{kind}"] = torch.cat([state[f"{block}attn.to_{x}.{kind}"] for x in "qkv"])
            out[f"{joint}context_block.attn.qkv.{kind}"] = torch.cat(
                [state[f"{block}attn.add_{x}_proj.{kind}"] for x in "qkv"])
            out[f"{joint}x_block.attn.proj.{kind}"] = state[f"{block}attn.to_out.0.{kind}"]
            out[f"{joint}x_block.adaLN_modulation.1.{kind}"] = state[f"{block}norm1.linear.{kind}"]
            context_norm = state[f"{block}norm1_context.linear.{kind}"]
            out[f"{joint}context_block.adaLN_modulation.1.{kind}"] = \
                _swap_halves(context_norm) if last else context_norm
            out[f"{joint}x_block.mlp.fc1.{kind}"] = state[f"{block}ff.net.0.proj.{kind}"]
            out[f"{joint}x_block.mlp.fc2.{kind}"] = state[f"{block}ff.net.2.{kind}"]
            if not last:  # the last block's context stream ends after attention
                out[f"{joint}context_block.attn.proj.{kind}"] = state[f"{block}attn.to_add_out.{kind}"]
                out[f"{joint}context_block.mlp.fc1.{kind}"] = state[f"{block}ff_context.net.0.proj.{kind}"]
                out[f"{joint}context_block.mlp.fc2.{kind}"] = state[f"{block}ff_context.net.2.{kind}"]
    return {"model.diffusion_model." + key: value for key, value in out.items()}


def _flux_to_bfl(state: dict, num_layers: int, num_single_layers: int) -> dict:
    """A diffusers FluxTransformer2DModel state dict in Black Forest Labs' layout, as flux1-*.safetensors has it."""
    import torch

    renames = {"time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
               "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
               "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
               "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
               "context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear"}
    out = {}
    for kind in ("weight", "bias"):
        for new, old in renames.items():
            out[f"{old}.{kind}"] = state[f"{new}.{kind}"]
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(state[f"norm_out.linear.{kind}"])
        for i in range(num_layers):
            block, double = f"transformer_blocks.{i}.", f"double_blocks.{i}."
            out[f"{double}img_attn.qkv.{kind}"] = torch.cat([state[f"{block}attn.to_{x}.{kind}"] for x in "qkv"])
            out[f"{double}txt_attn.qkv.{kind}"] = torch.cat([state[f"{block}attn.add_{x}_proj.{kind}"] for x in "qkv"])
            for bfl, diffusers in (("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
                                   ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                                   ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"),
                                   ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out")):
                out[f"{double}{bfl}.{kind}"] = state[f"{block}{diffusers}.{kind}"]
        for i in range(num_single_layers):
            block, single = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
            out[f"{single}linear1.{kind}"] = torch.cat([state[f"{block}attn.to_{x}.{kind}"] for x in "qkv"]
                                                       + [state[f"{block}proj_mlp.{kind}"]])
            out[f"{single}linear2.{kind}"] = state[f"{block}proj_out.{kind}"]
            out[f"{single}modulation.lin.{kind}"] = state[f"{block}norm.linear.{kind}"]
    for i in range(num_layers):
        block, double = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for stream, prefix in (("img", ""), ("txt", "added_")):
            out[f"{double}{stream}_attn.norm.query_norm.scale"] = state[f"{block}attn.norm_{prefix}q.weight"]
            out[f"{double}{stream}_attn.norm.key_norm.scale"] = state[f"{block}attn.norm_{prefix}k.weight"]
    for i in range(num_single_layers):
        block, single = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        out[f"{single}norm.query_norm.scale"] = state[f"{block}attn.norm_q.weight"]
        out[f"{single}norm.key_norm.scale"] = state[f"{block}attn.norm_k.weight"]
    return out


def _clip_to_open_clip(state: dict, prefix: str) -> dict:
    """A transformers CLIPTextModelWithProjection state dict in OpenCLIP's layout (SDXL's second encoder)."""
    import re

    import torch

    whole = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    out = {"text_projection": state["text_projection.weight"].T.contiguous()}
    for key, value in state.items():
        if key in whole:
            out[whole[key]] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            layer, part, kind = m[1], m[2], m[3]
            if part in parts:
                out[f"transformer.resblocks.{layer}.{parts[part]}.{kind}"] = value
            elif part == "self_attn.q_proj":  # q, k and v in one projection
                out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
                    [state[f"text_model.encoder.layers.{layer}.self_attn.{x}_proj.{kind}"] for x in "qkv"])
    return {prefix + key: value for key, value in out.items()}


def save_single_file(folder: Path, path: Path, family: str, encoders: bool = False) -> Path:
    """A diffusers folder of ``family`` as one ``.safetensors`` file in the layout model sites hand out.

    SDXL: UNet and VAE in the LDM layout, CLIP-L under ``conditioner.embedders.0`` and CLIP-G in
    OpenCLIP's layout under ``conditioner.embedders.1``; SDXL refiner (``sdxl-refiner``): the same with
    CLIP-G alone, under ``conditioner.embedders.0``;
    SD3: the MMDiT under ``model.diffusion_model.joint_blocks`` and the VAE (with ``encoders``, also
    CLIP-L, CLIP-G and T5 under ``text_encoders.``);
    Flux: the transformer alone in Black Forest Labs' layout (``double_blocks``), as flux1-dev ships.
    """
    from safetensors.torch import load_file, save_file

    def config(part: str) -> dict:
        return json.loads((folder / part / "config.json").read_text())

    def weights(part: str) -> dict:
        return load_file(folder / part / "diffusion_pytorch_model.safetensors")

    if family == "sdxl":
        tensors = {**_unet_to_ldm(weights("unet"), config("unet")), **_vae_to_ldm(weights("vae"), config("vae"))}
        for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
            tensors["conditioner.embedders.0.transformer.text_model." + key.removeprefix("text_model.")] = value
        tensors |= _clip_to_open_clip(load_file(folder / "text_encoder_2" / "model.safetensors"),
                                      "conditioner.embedders.1.model.")
    elif family == "sdxl-refiner":  # sd_xl_refiner_1.0's layout: CLIP-G (OpenCLIP) alone, as embedders.0
        tensors = {**_unet_to_ldm(weights("unet"), config("unet")), **_vae_to_ldm(weights("vae"), config("vae")),
                   **_clip_to_open_clip(load_file(folder / "text_encoder_2" / "model.safetensors"),
                                        "conditioner.embedders.0.model.")}
    elif family == "sd3":
        tensors = {**_sd3_to_original(weights("transformer"), config("transformer")["num_layers"]),
                   **_vae_to_ldm(weights("vae"), config("vae"))}
        if encoders:  # as sd3_medium_incl_clips_t5xxl: the three text encoders under text_encoders.
            for part, name in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl")):
                for key, value in load_file(folder / part / "model.safetensors").items():
                    tensors[f"text_encoders.{name}.transformer.{key}"] = value
    else:
        settings = config("transformer")
        tensors = _flux_to_bfl(weights("transformer"), settings["num_layers"], settings["num_single_layers"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path
