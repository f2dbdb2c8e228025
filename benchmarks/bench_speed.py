"""Speed levers (the ``speed`` recipe): each alone and combined, as ratios to float32 in the same run.

Two parts:

* ``tiny-shapes-diffusion`` through the real graph path (encode.text -> generate.image with
  ``speed``): seconds per image and prompt fidelity by the zoo's judge on held-out prompts.
* an SD-1.5-shaped UNet and VAE with random weights at ``size``² on this CPU, driven by the
  plugin's own loop (``sample_latents`` / ``decode_latents``) with the recipe's levers applied
  (``apply_levers``, ``for_one_loop``): seconds per image, peak RSS growth, and SSIM to the
  float32 image (scikit-image; pixel MAE when it is missing). Random weights draw no
  picture, so SSIM here measures how far a lever moves the output, not quality.

Timings are one image each (a fresh copy of the model per recipe; a one-step warm-up first
only with ``compile``), so ratios below ~1.1 are within noise on a shared machine.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

#: Recipes measured by default: each lever alone, then the combinations worth having.
SD_RECIPES: dict[str, dict[str, Any]] = {
    "fp32 (default)": {},
    "bf16": {"dtype": "bfloat16"},
    "channels_last": {"channels_last": True},
    "sdpa": {"attention": "sdpa"},
    "fuse_qkv": {"fuse_qkv": True},
    "int8_dynamic": {"quantize": "int8_dynamic"},
    "int8_weight_only": {"quantize": "int8_weight_only"},
    "step_cache=2": {"step_cache": 2},
    "step_cache=3": {"step_cache": 3},
    "token_merging=0.5": {"token_merging": 0.5},
    "tcd 4 steps": {"sampler": "tcd", "steps": 4},
    "bf16+step_cache=2": {"dtype": "bfloat16", "step_cache": 2},
    "bf16+step_cache=3+tome=0.5": {"dtype": "bfloat16", "step_cache": 3, "token_merging": 0.5},
    "step_cache=3+tome=0.5": {"step_cache": 3, "token_merging": 0.5},
}
TINY_RECIPES: dict[str, dict[str, Any]] = {
    "fp32 (default)": {},
    "bf16": {"dtype": "bfloat16"},
    "int8_dynamic": {"quantize": "int8_dynamic"},
    "step_cache=2": {"step_cache": 2},
    "step_cache=3": {"step_cache": 3},
    "tcd 4 steps": {"sampler": "tcd", "steps": 4},
    "bf16+step_cache=2": {"dtype": "bfloat16", "step_cache": 2},
}


def run(size: int = 256, steps: int = 10, tiny_n: int = 48, tiny_steps: int = 20,
        sd_recipes: dict[str, dict[str, Any]] | None = None,
        tiny_recipes: dict[str, dict[str, Any]] | None = None, sd_shape: str = "sd15") -> dict[str, Any]:
    """Measure both parts; returns rows and the best SD-shaped speed-up at SSIM >= 0.90."""
    tiny = run_tiny(tiny_recipes or TINY_RECIPES, n=tiny_n, steps=tiny_steps)
    sd = run_sd_shaped(sd_recipes or SD_RECIPES, size=size, steps=steps, shape=sd_shape)
    good = [r for r in sd if r["similarity"] >= 0.90 and r["name"] != "fp32 (default)"]
    best = max(good, key=lambda r: r["speedup"], default=None)
    ratio = {"best_sd_speedup_at_ssim_0.90": best["speedup"] if best else 1.0,
             "best_sd_recipe": best["name"] if best else ""}
    print(f"  ratio: best SD-shaped recipe at SSIM >= 0.90: {ratio['best_sd_recipe'] or 'none'} "
          f"({ratio['best_sd_speedup_at_ssim_0.90']:.2f}x fp32)")
    return {"tiny": tiny, "sd": sd, "size": size, "steps": steps, "ratio": ratio}


# --- tiny-shapes-diffusion, judged -----------------------------------------------------------------


def run_tiny(recipes: dict[str, dict[str, Any]], n: int, steps: int, rounds: int = 2) -> list[dict[str, Any]]:
    from sfumato import Engine, GraphBuilder
    from sfumato_zoo.evaluation import evaluation_prompts, score_against

    engine = Engine(device="cpu", cache=False)
    pairs = evaluation_prompts(n)
    prompts, specs = [p for p, _ in pairs], [s for _, s in pairs]

    def graph(texts: list[str], speed: dict[str, Any], count: int) -> Any:
        builder = GraphBuilder("speed")
        encode = builder.add("encode.text", "encode", texts=texts)
        extra = {"speed": speed} if speed else {}
        gen = builder.add("generate.image", "generate", conditioning=encode["conditioning"],
                          model="tiny-shapes-diffusion", steps=count, **extra)
        builder.output("images", gen["images"])
        return builder.build()

    for speed in recipes.values():
        engine.run(graph(prompts[:1], speed, 1))  # load the model (and the recipe's copy) before timing
    samples: dict[str, list[float]] = {name: [] for name in recipes}
    scores: dict[str, float] = {}
    for _ in range(rounds):  # interleaved rounds: drift on a shared machine hits every recipe alike
        for name, speed in recipes.items():
            started = time.perf_counter()
            images = engine.run(graph(prompts, speed, steps))["images"]
            samples[name].append((time.perf_counter() - started) / n)
            scores[name] = score_against(images, specs)["all"]
    rows = [{"name": name, "speed": speed, "seconds_per_image": statistics.median(samples[name]),
             "samples": samples[name], "all": scores[name]} for name, speed in recipes.items()]
    base = rows[0]["seconds_per_image"]
    for row in rows:
        row["speedup"] = base / row["seconds_per_image"]
        print(f"  tiny  {row['name']:<28} {row['seconds_per_image'] * 1000:7.1f} ms/image  "
              f"{row['speedup']:5.2f}x  judged all={row['all']:.3f}", flush=True)
    return rows


# --- SD-1.5-shaped, random weights ----------------------------------------------------------------


def sd_shaped_model(shape: str = "sd15") -> Any:
    """A ``DiffusionModel`` with an SD-1.5-shaped (or SDXL-shaped UNet core) random UNet and SD VAE."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sfumato_diffusers.loading import DiffusionModel

    torch.manual_seed(0)
    if shape == "sd15":
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    else:  # the SDXL UNet's blocks without its added text/time embeddings (which the loop does not drive)
        unet = UNet2DConditionModel(sample_size=128, block_out_channels=(320, 640, 1280),
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                                    cross_attention_dim=2048, use_linear_projection=True)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1}
    return DiffusionModel("sd15-random" if shape == "sd15" else "sdxl-random", unet.eval(), vae.eval(), config,
                          {}, device="cpu", dtype=torch.float32)


def _rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def generate_one(model: Any, speed: dict[str, Any], size: int, steps: int, device: str = "cpu",
                 copies: dict[str, Any] | None = None) -> tuple[Any, float]:
    """One image of the SD-shaped model under ``speed``: (uint8 array, seconds).

    ``copies`` keeps each module-lever copy across calls (keyed by those levers), so
    interleaved rounds time generation, not copying.
    """
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
    problems = recipe_conflicts(recipe, device)
    if problems:
        raise ValueError("; ".join(problems))
    module_levers = recipe.model_copy(update={"step_cache": 1, "sampler": None, "steps": None})
    key = module_levers.key()
    if copies is not None and key in copies:
        base = copies[key]
    else:
        base = apply_levers(model, module_levers)
        if copies is not None:
            copies[key] = base
    accelerated = apply_levers(base, recipe.model_copy(update={"dtype": None, "channels_last": False,
                                                                "attention": "default", "fuse_qkv": False,
                                                                "compile": False, "quantize": "none",
                                                                "token_merging": 0.0}))
    scheduler_name, count = sampling_choice(recipe, "dpm++", steps)
    width = model.unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(1)
    states = torch.randn(1, 77, width, generator=generator)

    def request(n: int) -> SamplingRequest:
        return SamplingRequest(states, None, torch.zeros_like(states), None, [0], n, 3.0, size, size)

    def once(n: int) -> Any:
        sampler = make_sampler(scheduler_name, model.scheduler_config, False)
        latents = sample_latents(for_one_loop(accelerated), sampler, request(n), lambda *_: None)
        return decode_latents(accelerated, latents)[0]

    if recipe.compile:
        once(1)  # warm-up: compiling is a first-call cost, not a per-image one
    started = time.perf_counter()
    image = once(count)
    seconds = time.perf_counter() - started
    del base  # the copy goes with this function; the caller keeps it in copies
    gc.collect()
    return np.asarray(image), seconds


def similarity(image: Any, reference: Any) -> tuple[float, str]:
    """SSIM to the reference (scikit-image), or 1 - MAE/255 when scikit-image is missing."""
    import numpy as np

    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return 1.0 - float(np.abs(image.astype(float) - reference.astype(float)).mean()) / 255.0, "1-MAE"
    return float(structural_similarity(image, reference, channel_axis=2, data_range=255)), "SSIM"


def run_sd_shaped(recipes: dict[str, dict[str, Any]], size: int, steps: int, shape: str = "sd15",
                  rounds: int = 2) -> list[dict[str, Any]]:
    """Interleaved rounds over the recipes (module-lever copies made once); median seconds per recipe."""
    model = sd_shaped_model(shape)
    copies: dict[str, Any] = {}
    samples: dict[str, list[float]] = {name: [] for name in recipes}
    images: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for round_index in range(rounds):
        for name, speed in recipes.items():
            if name in errors:
                continue
            try:
                image, seconds = generate_one(model, speed, size, steps, copies=copies)
            except Exception as error:  # noqa: BLE001 - a lever that fails here is reported, not fatal
                errors[name] = f"{type(error).__name__}: {error}"[:300]
                print(f"  sd    {name:<28} failed: {errors[name][:160]}", flush=True)
                continue
            samples[name].append(seconds)
            images[name] = image
            print(f"  sd    round {round_index + 1} {name:<28} {seconds:7.2f} s/image", flush=True)
    reference = images.get(next(iter(recipes)))
    rows: list[dict[str, Any]] = []
    base = statistics.median(samples[next(iter(recipes))]) if reference is not None else float("nan")
    for name, speed in recipes.items():
        if name in errors:
            rows.append({"name": name, "speed": speed, "error": errors[name], "seconds_per_image": float("nan"),
                         "speedup": 0.0, "similarity": 0.0})
            continue
        seconds = statistics.median(samples[name])
        score, metric = similarity(images[name], reference)
        rows.append({"name": name, "speed": speed, "seconds_per_image": seconds, "samples": samples[name],
                     "speedup": base / seconds, "similarity": score, "metric": metric})
        print(f"  sd    {name:<28} {seconds:7.2f} s/image  {base / seconds:5.2f}x  {metric} {score:.4f}", flush=True)
    print(f"  peak RSS of the process: {_rss_bytes() / 2**30:.1f} GiB", flush=True)
    return rows


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", choices=("tiny", "sd", "both"), default="both")
    parser.add_argument("--out", default="")
    parser.add_argument("--recipes", nargs="*", default=None, help="SD-shaped recipe names (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    args = parser.parse_args()
    chosen = {name: SD_RECIPES[name] for name in args.recipes} if args.recipes else SD_RECIPES
    if args.only == "tiny":
        result: Any = run_tiny(TINY_RECIPES, 48, 20)
    elif args.only == "sd":
        result = run_sd_shaped(chosen, args.size, args.steps, rounds=args.rounds)
    elif args.only == "both":
        result = {"tiny": run_tiny(TINY_RECIPES, 48, 20),
                  "sd": run_sd_shaped(chosen, args.size, args.steps, rounds=args.rounds)}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
