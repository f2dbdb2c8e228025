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


def save_tiny_sdxl_pipeline(folder: Path) -> Path:
    """An SDXL-layout folder: a UNet with added text/time embeddings and two CLIP text encoders.

    The UNet's cross-attention width is the two encoders' widths side by side
    (32 + 32) and its added embedding takes six time ids (8 each) plus the
    second encoder's 32-wide pooled projection, as in SDXL.
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 32], layers_per_block=1,
                  latent_channels=4, norm_num_groups=16, sample_size=16).save_pretrained(folder / "vae")
    EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           timestep_spacing="leading", steps_offset=1).save_pretrained(folder / "scheduler")
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
