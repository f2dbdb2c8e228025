"""Speed levers on a GPU: SD-1.5- and SDXL-shaped UNets (random weights) at 512² and 1024².

Run on a machine with CUDA: ``python -m benchmarks.gpu_speed [--quick] [--out FILE]``.
For each shape, size and recipe (fp32, bf16, bf16 + compile, bf16 + int8, bf16 + float8 where
the card has float8, bf16 + step caching, and combinations) it reports images per second
(denoising loop + VAE decode, batch 1 with guidance, after a warm-up), peak GPU memory, SSIM to
the fp32 image, and model FLOP utilisation: the UNet's FLOPs per image (counted once with
``torch.utils.flop_counter``) over the loop's seconds, against the card's dense bf16 peak
(known cards below, or ``--peak-tflops``). Step caching skips FLOPs, so its MFU counts only
the FLOPs the full UNet would have done: read it as "effective" utilisation.

Everything uses the plugin's own code (``apply_levers``, ``for_one_loop``, ``sample_latents``,
``decode_latents``), so what is measured is what ``speed`` does in a graph.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from benchmarks.bench_speed import similarity

#: Dense bf16 tensor-core peaks (TFLOP/s, without sparsity), by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}

RECIPES: dict[str, dict[str, Any]] = {
    "fp32 (default)": {},
    "bf16": {"dtype": "bfloat16"},
    "bf16+sdpa+fuse_qkv+channels_last": {"dtype": "bfloat16", "attention": "sdpa", "fuse_qkv": True,
                                         "channels_last": True},
    "bf16+compile": {"dtype": "bfloat16", "compile": True},
    "bf16+int8_dynamic": {"dtype": "bfloat16", "quantize": "int8_dynamic"},
    "bf16+int8_dynamic+compile": {"dtype": "bfloat16", "quantize": "int8_dynamic", "compile": True},
    "bf16+float8_dynamic+compile": {"dtype": "bfloat16", "quantize": "float8_dynamic", "compile": True},
    "bf16+step_cache=2": {"dtype": "bfloat16", "step_cache": 2},
    "bf16+step_cache=3+compile": {"dtype": "bfloat16", "step_cache": 3, "compile": True},
    "bf16+tcd 4 steps": {"dtype": "bfloat16", "sampler": "tcd", "steps": 4},
}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def unet_flops(model: Any, size: int) -> int:
    """FLOPs of one UNet call (batch 2: guidance) at ``size``², counted by torch's flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = size // 8
    width = model.unet.config.cross_attention_dim
    sample = torch.randn(2, 4, latent, latent, device=model.device, dtype=model.dtype)
    states = torch.randn(2, 77, width, device=model.device, dtype=model.dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.unet(sample, 500, encoder_hidden_states=states)
    return int(counter.get_total_flops())


def measure(model: Any, speed: dict[str, Any], size: int, steps: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from sfumato_diffusers.sampling import SamplingRequest, decode_latents, sample_latents
    from sfumato_diffusers.speed import (
        SpeedRecipe,
        apply_levers,
        for_one_loop,
        make_sampler,
        recipe_conflicts,
        sampling_choice,
    )

    recipe = SpeedRecipe.model_validate(speed)
    problems = recipe_conflicts(recipe, "cuda")
    if problems:
        raise ValueError("; ".join(problems))
    if recipe.quantize == "float8_dynamic" and torch.cuda.get_device_capability() < (8, 9):
        raise ValueError("this card has no float8 tensor cores")
    accelerated = apply_levers(model, recipe)
    scheduler, count = sampling_choice(recipe, "dpm++", steps)
    generator = torch.Generator().manual_seed(1)
    states = torch.randn(1, 77, model.unet.config.cross_attention_dim, generator=generator)
    request = SamplingRequest(states, None, torch.zeros_like(states), None, [0], count, 3.0, size, size)

    def once() -> tuple[Any, float]:
        torch.cuda.synchronize()
        started = time.perf_counter()
        latents = sample_latents(for_one_loop(accelerated), make_sampler(scheduler, model.scheduler_config, False),
                                 request, lambda *_: None)
        torch.cuda.synchronize()
        loop = time.perf_counter() - started
        return decode_latents(accelerated, latents)[0], loop

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    once()  # warm-up: compile, autotuning, allocator
    warmup = time.perf_counter() - started
    seconds, loops = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        image, loop = once()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        loops.append(loop)
    accelerated = None  # free the copy before the next recipe
    torch.cuda.empty_cache()
    return {"image": np.asarray(image), "seconds_per_image": float(np.median(seconds)),
            "loop_seconds": float(np.median(loops)), "warmup_s": warmup, "steps": count,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.bench_speed import sd_shaped_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="SD-1.5 shape at 512² only, 10 steps, 1 repeat")
    parser.add_argument("--shapes", nargs="*", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    parser.add_argument("--sizes", nargs="*", type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="*", default=None, help=f"names from: {', '.join(RECIPES)}")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak")
    parser.add_argument("--out", default="gpu_speed.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark is for a GPU (bench_speed measures the CPU)")
    if args.quick:
        args.shapes, args.sizes, args.steps, args.repeats = ["sd15"], [512], 10, 1
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, args.peak_tflops)
    chosen = {key: RECIPES[key] for key in args.recipes} if args.recipes else RECIPES
    rows = []
    for shape in args.shapes:
        model = sd_shaped_model(shape)
        model.unet.to("cuda")
        model.vae.to("cuda")
        model.device = "cuda"
        for size in args.sizes:
            flops = unet_flops(model, size)
            reference = None
            for recipe_name, speed in chosen.items():
                try:
                    result = measure(model, speed, size, args.steps, args.repeats)
                except Exception as error:  # noqa: BLE001 - one failing lever is a row, not the end
                    print(f"{shape} {size} {recipe_name:<36} failed: {type(error).__name__}: {str(error)[:200]}",
                          flush=True)
                    rows.append({"shape": shape, "size": size, "recipe": recipe_name, "error": str(error)[:300]})
                    continue
                image = result.pop("image")
                reference = image if reference is None else reference
                score, metric = similarity(image, reference)
                # Step caching: count the FLOPs the full UNet would do (effective utilisation).
                achieved = flops * result["steps"] / result["loop_seconds"] / 1e12
                row = {"shape": shape, "size": size, "recipe": recipe_name, "speed": speed, **result,
                       "images_per_s": 1.0 / result["seconds_per_image"], "similarity": score, "metric": metric,
                       "unet_tflop_per_call": flops / 1e12, "achieved_tflops": achieved,
                       "mfu": achieved / peak if peak else None}
                rows.append(row)
                print(f"{shape} {size} {recipe_name:<36} {row['images_per_s']:6.2f} img/s  "
                      f"{metric} {score:.3f}  {row['peak_memory_gb']:.1f} GB  "
                      f"MFU {row['mfu'] * 100 if peak else float('nan'):.1f}%  warm-up {row['warmup_s']:.0f} s",
                      flush=True)
        del model
        torch.cuda.empty_cache()
    with open(args.out, "w") as handle:
        json.dump({"device": name, "peak_bf16_tflops": peak, "torch": torch.__version__, "rows": rows}, handle,
                  indent=2, default=str)
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
