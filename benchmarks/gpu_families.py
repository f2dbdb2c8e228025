"""GPU benchmark: SDXL-shaped and Flux-shaped models (random weights, 1024², bf16) through a graph and directly.

For a machine with a GPU (an H200 holds both)::

    python -m benchmarks.gpu_families [--families sdxl flux] [--size 1024] [--steps 20] [--repeats 3]

The denoisers and autoencoders have the real architectures (SDXL base's UNet
and VAE; FLUX.1-dev's transformer, with guidance embeddings, and VAE) with
random weights, saved as diffusers folders and loaded by sfumato's loaders
and by diffusers' pipelines; the text encoders have the real widths but one
layer (both sides pass the same embeddings, so they are not timed). Each side
is timed per image as in ``bench_families`` (ratio goal: at most 1.05).
``--tiny`` runs the same code on the test suite's tiny models on the CPU, to
check the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from . import bench_families


def _text_encoders(folder: Path, widths: list[tuple[str, int, int]], t5_width: int = 0) -> None:
    """One-layer CLIP text encoders (``(subfolder, width, projection)``) and optionally T5 (``text_encoder_2``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    tiny = bench_families._tiny_builders()
    for index, (name, width, projection) in enumerate(widths):
        config = CLIPTextConfig(hidden_size=width, intermediate_size=width * 4, num_attention_heads=width // 64,
                                num_hidden_layers=2, vocab_size=len(tiny.WORDS) + 4, max_position_embeddings=77,
                                bos_token_id=2, eos_token_id=3, pad_token_id=0, projection_dim=projection)
        (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).save_pretrained(folder / name)
        tiny.save_word_tokenizer(folder / ("tokenizer" if index == 0 else "tokenizer_2"), max_length=77)
    if t5_width:
        config = T5Config(vocab_size=len(tiny.WORDS) + 4, d_model=t5_width, d_kv=64, d_ff=t5_width * 2, num_layers=1,
                          num_heads=t5_width // 64, decoder_start_token_id=0, pad_token_id=0, eos_token_id=3)
        T5EncoderModel(config).save_pretrained(folder / "text_encoder_2")
        tiny.save_word_tokenizer(folder / "tokenizer_2", max_length=512)


def save_sdxl_shaped(folder: Path, size: int) -> Path:
    """SDXL base's UNet and VAE architectures, random weights, as a diffusers folder (bf16)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        UNet2DConditionModel(
            sample_size=size // 8, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ).to(torch.bfloat16).save_pretrained(folder / "unet")
        AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                      up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                      layers_per_block=2, latent_channels=4, sample_size=size,
                      scaling_factor=0.13025).to(torch.bfloat16).save_pretrained(folder / "vae")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           timestep_spacing="leading", steps_offset=1).save_pretrained(folder / "scheduler")
    _text_encoders(folder, [("text_encoder", 768, 0), ("text_encoder_2", 1280, 1280)])
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return folder


def save_flux_shaped(folder: Path, size: int) -> Path:
    """FLUX.1-dev's transformer (guidance-distilled) and VAE architectures, random weights (bf16)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        FluxTransformer2DModel(guidance_embeds=True).to(torch.bfloat16).save_pretrained(folder / "transformer")
        AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                      up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                      layers_per_block=2, latent_channels=16, sample_size=size, scaling_factor=0.3611,
                      shift_factor=0.1159, use_quant_conv=False,
                      use_post_quant_conv=False).to(torch.bfloat16).save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                    base_image_seq_len=256, max_image_seq_len=4096).save_pretrained(folder / "scheduler")
    _text_encoders(folder, [("text_encoder", 768, 0)], t5_width=4096)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_families", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=["sdxl", "flux"], choices=["sdxl", "flux"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tiny test models on the CPU (checks the script)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    device, dtype = ("cpu", "float32") if args.tiny else ("cuda", "bfloat16")
    tiny = bench_families._tiny_builders()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        for family in args.families:
            folder = Path(root) / family
            if args.tiny:
                (tiny.save_tiny_sdxl_pipeline if family == "sdxl" else tiny.save_tiny_flux_pipeline)(folder)
            else:
                (save_sdxl_shaped if family == "sdxl" else save_flux_shaped)(folder, args.size)
            print(f"[{family}] {'tiny' if args.tiny else f'{args.size}x{args.size}'}, {dtype}, {device}", flush=True)
            results[family] = bench_families._one_family(family, folder, args.steps, args.repeats, device, dtype)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
