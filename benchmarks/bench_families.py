"""Per family (SD 1.x/2.x, SDXL, SD3, Flux): a graph run vs the same model called as a diffusers pipeline.

Both sides get the same components (the random-weight tiny folders the tests
use, loaded once), the same precomputed prompt embeddings, Euler, guidance 5
and one image; the graph side changes its seed every run so generation really
runs (the encoder stays cached, as in a seed sweep). The goal is a ratio of
at most 1.05: the graph costs no more than calling diffusers directly.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from .timing import alternate, fmt

PROMPT = "a red circle on a white background"
GUIDANCE = 5.0


def _tiny_builders() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_models

    return tiny_models


def _graph(family: str, folder: Path, steps: int) -> Any:
    from sfumato import GraphBuilder

    builder = GraphBuilder(f"bench-{family}")
    if family in ("flux", "sd3"):
        encode = builder.add(f"encode.{family}", "encode", texts=PROMPT, model=str(folder))
        extra = {"negative": builder.add("encode.sd3", "negative", texts="", model=str(folder))["conditioning"]} \
            if family == "sd3" else {}
        generate = builder.add(f"{family}.generate", "generate", conditioning=encode["conditioning"],
                               model=str(folder), steps=steps, guidance=GUIDANCE, seed=0, **extra)
        builder.output("images", generate["images"])
        return builder.build()
    if family == "sdxl":
        encode = builder.add("encode.sdxl", "encode", texts=PROMPT, model=str(folder))
    else:
        encode = builder.add("encode.text", "encode", texts=PROMPT, model=str(folder / "text_encoder"), max_length=16)
    generate = builder.add("diffusion.generate", "generate", conditioning=encode["conditioning"], model=str(folder),
                           steps=steps, scheduler="euler", guidance=GUIDANCE, seed=0)
    builder.output("images", generate["images"])
    return builder.build()


def _pipeline(family: str, folder: Path) -> Any:
    import torch

    if family in ("flux", "sd3"):
        import diffusers

        cls = getattr(diffusers, "FluxPipeline" if family == "flux" else "StableDiffusion3Pipeline")
        pipe = _flow_pipeline(cls, family, folder)
        pipe.set_progress_bar_config(disable=True)
        torch.set_grad_enabled(False)
        return pipe
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                         "requires_safety_checker": False}
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    components: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
        "vae": AutoencoderKL.from_pretrained(folder / "vae").eval(),
        "scheduler": EulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder").eval(),
        "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer"),
    }
    if family == "sdxl":
        components["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2").eval()
        components["tokenizer_2"] = AutoTokenizer.from_pretrained(folder / "tokenizer_2")
    pipe = cls(**components, **extra)
    pipe.set_progress_bar_config(disable=True)
    torch.set_grad_enabled(False)
    return pipe


def _flow_pipeline(cls: Any, family: str, folder: Path) -> Any:
    """The pipeline from its components, text encoders left out (both sides pass embeddings)."""
    import diffusers

    transformer = getattr(diffusers, "FluxTransformer2DModel" if family == "flux" else "SD3Transformer2DModel")
    absent = ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"] + (
        ["text_encoder_3", "tokenizer_3"] if family == "sd3" else [])
    return cls(transformer=transformer.from_pretrained(folder / "transformer").eval(),
               vae=diffusers.AutoencoderKL.from_pretrained(folder / "vae").eval(),
               scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
               **dict.fromkeys(absent))


def _one_family(family: str, folder: Path, steps: int, repeats: int, device: str = "cpu",
                dtype: str = "float32") -> dict[str, Any]:
    """Time one family's folder both ways on ``device`` at ``dtype`` (``bfloat16`` on a GPU)."""
    import torch

    from sfumato import Engine, Graph

    engine = Engine(device=device, dtype=dtype)
    graph = _graph(family, folder, steps)
    values = engine.run(graph).values  # warm: loads the models
    conditioning = values["encode"]["conditioning"]
    pipe = _pipeline(family, folder).to(device=device, dtype=getattr(torch, dtype))
    embeds: dict[str, Any] = {"prompt_embeds": conditioning.states}
    if family in ("flux", "sd3"):
        embeds["pooled_prompt_embeds"] = conditioning.pooled
        if family == "sd3":
            negative = values["negative"]["conditioning"]
            embeds |= {"negative_prompt_embeds": negative.states, "negative_pooled_prompt_embeds": negative.pooled}
    elif family == "sdxl":
        embeds["pooled_prompt_embeds"] = conditioning.pooled  # negatives: zeros, as both sides do
    else:
        embeds["negative_prompt_embeds"] = engine_unconditional(pipe)
    embeds = {name: value.to(device, getattr(torch, dtype)) for name, value in embeds.items()}
    denoiser = pipe.transformer if family in ("flux", "sd3") else pipe.unet
    size = int(pipe.vae.config.sample_size) if family == "flux" else int(denoiser.config.sample_size) * pipe.vae_scale_factor
    seeds = iter(range(1, 100_000))
    document = graph.to_dict()

    def through_graph() -> None:
        document["nodes"]["generate"]["inputs"]["seed"] = next(seeds)
        engine.run(Graph.from_dict(document))

    def direct() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        pipe(**embeds, num_inference_steps=steps, guidance_scale=GUIDANCE, height=size, width=size,
             generator=torch.Generator().manual_seed(next(seeds)), output_type="pil")

    direct()  # warm, as the graph side is: first calls pay for lazy initialisation
    through_graph()
    measured = alternate({"direct_pipeline": direct, "sfumato_graph": through_graph}, repeats=repeats)
    ratio = measured["sfumato_graph"].median / measured["direct_pipeline"].median
    for name, m in measured.items():
        print(f"  {family:<5} {name:<16} {fmt(m.median)} per image (±{m.spread:.0%})")
    print(f"  {family:<5} ratio: graph / direct = {ratio:.3f}")
    return {name: m.as_dict() for name, m in measured.items()} | {"ratio": ratio}


def engine_unconditional(pipe: Any) -> Any:
    """The SD pipeline's own empty-prompt embedding (what diffusion.generate uses as the negative)."""
    tokens = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    return pipe.text_encoder(tokens.input_ids.to(pipe.device)).last_hidden_state


def run(steps: int = 20, repeats: int = 7, families: tuple[str, ...] = ("sd", "sdxl", "sd3", "flux")) -> dict[str, Any]:
    tiny = _tiny_builders()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        for family in families:
            folder = Path(root) / family
            builders = {"sd": tiny.save_tiny_sd_pipeline, "sdxl": tiny.save_tiny_sdxl_pipeline,
                        "sd3": tiny.save_tiny_sd3_pipeline, "flux": tiny.save_tiny_flux_pipeline}
            builders[family](folder)
            results[family] = _one_family(family, folder, steps, repeats)
    results["ratio"] = {f"{family}_graph_over_direct": results[family]["ratio"] for family in families}
    return results
