"""Speed levers (the ``speed`` recipe): each alone and combined, as ratios to float32 in the same run.

Two parts:

* ``tiny-shapes-diffusion`` through the real graph path (encode.text -> generate.image with
  ``speed``): seconds per image and prompt fidelity by the zoo's judge on held-out prompts.
* an SD-1.5-shaped UNet and VAE with random weights at ``size``² on this CPU, driven by the
  plugin's own loop (``sample_latents`` / ``decode_latents``) with the recipe's levers applied
  (``apply_levers``, ``for_one_loop``), each timed beside diffusers' own ``StableDiffusionPipeline``
  in float32 with the same UNet, VAE, sampler, seed and conditioning: speed-up over it, seconds
  per image, memory the recipe adds, and SSIM to the pipeline's image (scikit-image; pixel MAE
  when it is missing). Random weights draw no picture, so SSIM here measures how far a lever
  moves the output, not quality. ``--plot FILE`` draws seconds against SSIM (the Pareto plot).

Ratios below ~1.1 are within noise on a shared machine.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Self

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
    "openvino": {"backend": "openvino"},
    "openvino bf16": {"backend": "openvino", "dtype": "bfloat16"},
    # "identity": an LCM-LoRA file with zero up matrices, made for the random UNet (identity_lcm_lora).
    "lcm-lora path (4 steps, cfg 1)": {"lcm_lora": "identity"},
    "lcm-lora path + openvino bf16": {"lcm_lora": "identity", "backend": "openvino", "dtype": "bfloat16"},
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
    # The LCM-LoRA rows sample differently (4 LCM steps): their SSIM to the pipeline says nothing here.
    good = [r for r in sd if r["similarity"] >= 0.90 and r["name"] != "fp32 (default)"
            and "lcm_lora" not in r["speed"]]
    best = max(good, key=lambda r: r["speedup"], default=None)
    ratio = {"best_sd_speedup_at_ssim_0.90": best["speedup"] if best else 1.0,
             "best_sd_recipe": best["name"] if best else ""}
    print(f"  ratio: best SD-shaped recipe at SSIM >= 0.90: {ratio['best_sd_recipe'] or 'none'} "
          f"({ratio['best_sd_speedup_at_ssim_0.90']:.2f}x diffusers' fp32 pipeline)")
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


def _current_rss() -> int:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The highest resident memory while a block runs, sampled every 20 ms, above what it was at the start."""

    def __enter__(self) -> Self:
        import threading

        self.start = self.peak = _current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _current_rss())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss())

    @property
    def added(self) -> int:
        return self.peak - self.start


def identity_lcm_lora(model: Any, path: Any, rank: int = 8) -> Any:
    """An LCM-LoRA-shaped file for ``model``'s UNet whose up matrices are zero (merging changes nothing).

    Random weights have no consistency-distilled LoRA; this one runs the recipe's real path (merge
    into a copy, LCM scheduler, 4 steps, no guidance) on the base weights, so it times that path.
    """
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, module in model.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and isinstance(module, torch.nn.Linear):
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(rank, module.in_features) * 0.01
            tensors[f"unet.{name}.lora_B.weight"] = torch.zeros(module.out_features, rank)
    save_file(tensors, str(path))
    return path


def _request(model: Any, size: int, steps: int, guidance: float) -> Any:
    import torch

    from sfumato_diffusers.sampling import SamplingRequest

    width = model.unet.config.cross_attention_dim
    states = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(1))
    return SamplingRequest(states, None, torch.zeros_like(states), None, [0], steps, guidance, size, size)


def prepare_recipe(model: Any, speed: dict[str, Any], device: str = "cpu") -> Any:
    """The model with the recipe's levers applied (the copy the generation nodes would keep)."""
    from sfumato_diffusers.speed import SpeedRecipe, apply_levers, recipe_conflicts, recipe_problems

    recipe = SpeedRecipe.model_validate(speed)
    problems = recipe_conflicts(recipe, device) + recipe_problems(recipe)
    if problems:
        raise ValueError("; ".join(problems))
    return apply_levers(model, recipe)


def generate_one(accelerated: Any, speed: dict[str, Any], size: int, steps: int, guidance: float = 3.0,
                 count: int | None = None) -> tuple[Any, float]:
    """One image of a prepared model under ``speed``: (uint8 array, seconds); ``count`` overrides the steps."""
    import numpy as np

    from sfumato_diffusers.sampling import decode_latents, sample_latents
    from sfumato_diffusers.speed import SpeedRecipe, for_one_loop, guidance_choice, make_sampler, sampling_choice

    recipe = SpeedRecipe.model_validate(speed)
    scheduler_name, chosen = sampling_choice(recipe, "dpm++", steps)
    request = _request(accelerated, size, count or chosen, guidance_choice(recipe, guidance))
    started = time.perf_counter()
    sampler = make_sampler(scheduler_name, accelerated.scheduler_config, bool(accelerated.info.get("lcm")))
    latents = sample_latents(for_one_loop(accelerated), sampler, request, lambda *_: None)
    image = decode_latents(accelerated, latents)[0]
    return np.asarray(image), time.perf_counter() - started


def diffusers_pipeline(model: Any) -> Any:
    """diffusers' own ``StableDiffusionPipeline`` around the same UNet and VAE (fp32, its defaults)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config)
    pipeline = StableDiffusionPipeline(vae=model.vae, text_encoder=None, tokenizer=None, unet=model.unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def pipeline_one(pipeline: Any, model: Any, size: int, steps: int, guidance: float = 3.0) -> tuple[Any, float]:
    """One image from the diffusers pipeline with the same conditioning and seed as the plugin's loop."""
    import numpy as np
    import torch

    request = _request(model, size, steps, guidance)
    started = time.perf_counter()
    images = pipeline(prompt_embeds=request.states, negative_prompt_embeds=request.negative_states,
                      num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
    seconds = time.perf_counter() - started
    return (images[0] * 255).round().clip(0, 255).astype(np.uint8), seconds


def similarity(image: Any, reference: Any) -> tuple[float, str]:
    """SSIM to the reference (scikit-image), or 1 - MAE/255 when scikit-image is missing."""
    import numpy as np

    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return 1.0 - float(np.abs(image.astype(float) - reference.astype(float)).mean()) / 255.0, "1-MAE"
    return float(structural_similarity(image, reference, channel_axis=2, data_range=255)), "SSIM"


BASELINE = "diffusers pipeline fp32"


def run_sd_shaped(recipes: dict[str, dict[str, Any]], size: int, steps: int, shape: str = "sd15",
                  rounds: int = 2, plot: str | None = None, workdir: str | None = None) -> list[dict[str, Any]]:
    """Each recipe against diffusers' default fp32 pipeline timed right beside it, one recipe at a time.

    Per recipe: its model copy is made (memory added is the peak resident growth while making it,
    warming it up — compiling, converting — and making the first image), then ``rounds`` pairs of
    (pipeline image, recipe image) are timed, and the copy is freed. The speed-up is the median
    pipeline time of those pairs over the recipe's median, so drift on a shared machine hits both.
    """
    import tempfile
    from pathlib import Path

    model = sd_shaped_model(shape)
    pipeline = diffusers_pipeline(model)
    work = Path(workdir or tempfile.mkdtemp(prefix="bench-speed-"))
    lcm_file = None
    reference, first_pipeline_seconds = pipeline_one(pipeline, model, size, steps)  # warms the pipeline up
    print(f"  sd    {BASELINE:<32} {first_pipeline_seconds:7.2f} s/image (first)", flush=True)
    rows: list[dict[str, Any]] = []
    for name, speed in recipes.items():
        if "lcm_lora" in speed and speed["lcm_lora"] == "identity":
            lcm_file = lcm_file or identity_lcm_lora(model, work / "identity-lcm-lora.safetensors")
            speed = {**speed, "lcm_lora": str(lcm_file)}
        try:
            gc.collect()
            with PeakMemory() as memory:
                accelerated = prepare_recipe(model, speed)
                generate_one(accelerated, speed, size, steps, count=1)  # warm-up: compile or convert happen here
                image, _ = generate_one(accelerated, speed, size, steps)
            timings, baselines = [], []
            for _ in range(rounds):
                baselines.append(pipeline_one(pipeline, model, size, steps)[1])
                image, seconds = generate_one(accelerated, speed, size, steps)
                timings.append(seconds)
        except Exception as error:  # noqa: BLE001 - a lever that fails here is reported, not fatal
            message = f"{type(error).__name__}: {error}"[:300]
            print(f"  sd    {name:<32} failed: {message[:160]}", flush=True)
            rows.append({"name": name, "speed": speed, "error": message, "seconds_per_image": float("nan"),
                         "speedup": 0.0, "similarity": 0.0})
            continue
        finally:
            accelerated = None
            gc.collect()
        seconds, base = statistics.median(timings), statistics.median(baselines)
        score, metric = similarity(image, reference)
        row = {"name": name, "speed": speed, "seconds_per_image": seconds, "samples": timings,
               "baseline_seconds": base, "baseline_samples": baselines, "speedup": base / seconds,
               "similarity": score, "metric": metric, "memory_added_gib": memory.added / 2**30}
        rows.append(row)
        print(f"  sd    {name:<32} {seconds:7.2f} s/image  {row['speedup']:5.2f}x (pipeline {base:.2f} s)  "
              f"{metric} {score:.4f}  +{row['memory_added_gib']:.2f} GiB", flush=True)
    print(f"  peak RSS of the process: {_rss_bytes() / 2**30:.1f} GiB", flush=True)
    if plot:
        pareto_plot(rows, plot, f"SD-1.5-shaped UNet, random weights, {size}², {steps} steps, this CPU\n"
                    "(LCM-LoRA rows sample otherwise: their SSIM is not a fidelity)")
    return rows


def pareto_plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Time per image against SSIM to the pipeline's image, the Pareto front joined (matplotlib, else PIL).

    Time is relative to diffusers' pipeline timed beside each recipe (1 = as slow as it): absolute
    seconds of recipes measured minutes apart on a shared machine are not comparable.
    """
    from sfumato_diffusers.tune import pareto

    points = [{"name": BASELINE, "seconds": 1.0, "fidelity": 1.0}]
    points += [{"name": r["name"], "seconds": 1.0 / r["speedup"], "fidelity": r["similarity"]}
               for r in rows if "error" not in r]
    front = pareto(points)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pil_plot(points, front, path, title)
        return
    figure, axis = plt.subplots(figsize=(8, 5))
    for index, point in enumerate(sorted(points, key=lambda p: p["seconds"])):
        on_front = point in front
        axis.scatter(point["seconds"], point["fidelity"], color="tab:blue" if on_front else "tab:gray", zorder=3)
        # Staggered labels: points of equal SSIM sit on one line.
        axis.annotate(point["name"], (point["seconds"], point["fidelity"]), fontsize=7, textcoords="offset points",
                      xytext=(4, -12 - 10 * (index % 3)), rotation=0)
    axis.plot([p["seconds"] for p in front], [p["fidelity"] for p in front], color="tab:blue", alpha=0.5)
    axis.set_xlabel("seconds per image, relative to diffusers' fp32 pipeline timed beside it")
    axis.set_ylabel("SSIM to diffusers' fp32 pipeline image")
    axis.set_title(title, fontsize=8, wrap=True)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _pil_plot(points: list[dict[str, Any]], front: list[dict[str, Any]], path: str, title: str) -> None:
    from PIL import Image, ImageDraw

    width, height, margin = 800, 500, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xs, ys = [p["seconds"] for p in points], [p["fidelity"] for p in points]
    x_max, y_min = max(xs) * 1.1, min(min(ys), 0.9)

    def at(point: dict[str, Any]) -> tuple[float, float]:
        return (margin + point["seconds"] / x_max * (width - 2 * margin),
                height - margin - (point["fidelity"] - y_min) / (1.0 - y_min + 1e-9) * (height - 2 * margin))

    draw.line([(margin, margin), (margin, height - margin), (width - margin, height - margin)], fill="black")
    draw.text((margin, 10), title, fill="black")
    draw.text((width // 2 - 160, height - 30), "seconds per image, relative to diffusers' fp32 pipeline",
              fill="black")
    draw.text((5, margin - 20), f"SSIM (from {y_min:.2f} to 1)", fill="black")
    for point in points:
        x, y = at(point)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill="blue" if point in front else "gray")
        draw.text((x + 6, y - 6), point["name"], fill="black")
    draw.line([at(p) for p in front], fill="blue") if len(front) > 1 else None
    image.save(path)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", choices=("tiny", "sd", "both"), default="both")
    parser.add_argument("--out", default="")
    parser.add_argument("--recipes", nargs="*", default=None, help="SD-shaped recipe names (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="timed (pipeline, recipe) pairs per recipe")
    parser.add_argument("--plot", default=None, help="write the Pareto plot (seconds vs SSIM) here")
    args = parser.parse_args()
    chosen = {name: SD_RECIPES[name] for name in args.recipes} if args.recipes else SD_RECIPES
    if args.only == "tiny":
        result: Any = run_tiny(TINY_RECIPES, 48, 20)
    elif args.only == "sd":
        result = run_sd_shaped(chosen, args.size, args.steps, rounds=args.rounds, plot=args.plot)
    elif args.only == "both":
        result = {"tiny": run_tiny(TINY_RECIPES, 48, 20),
                  "sd": run_sd_shaped(chosen, args.size, args.steps, rounds=args.rounds, plot=args.plot)}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
