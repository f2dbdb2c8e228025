"""Generation overhead: tiny diffusion through the graph engine vs the same model in a direct diffusers loop."""

from __future__ import annotations

from typing import Any

from .timing import alternate, fmt

MODEL = "tiny-shapes-diffusion"
PROMPT = "a blue square on a white background"


def direct_loop(unet: Any, vae: Any, scheduler_config: dict, states: Any, steps: int, seed: int) -> Any:
    """What a user would write with diffusers alone: DPM-Solver++, guidance 3, one image."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, 4, 8, 8), generator=generator) * scheduler.init_noise_sigma
    cond = torch.cat([torch.zeros_like(states), states])
    with torch.inference_mode():
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            pred = unet(model_in, t, encoder_hidden_states=cond, class_labels=cond[:, 0]).sample
            uncond, text = pred.chunk(2)
            latents = scheduler.step(uncond + 3.0 * (text - uncond), t, latents).prev_sample
        return vae.decode(latents / vae.config.scaling_factor).sample


def run(steps: int = 20, repeats: int = 7) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sfumato import Engine, GraphBuilder, default_registry

    path = default_registry().models[MODEL].path()
    unet = UNet2DConditionModel.from_pretrained(path / "unet").eval()
    vae = AutoencoderKL.from_pretrained(path / "vae").eval()
    import json

    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    engine = Engine(device="cpu", dtype="float32")
    builder = GraphBuilder("bench")
    encode = builder.add("encode.text", "encode", texts=PROMPT)
    generate = builder.add("diffusion.generate", "generate", conditioning=encode["conditioning"], model=MODEL,
                           steps=steps, scheduler="dpm++", guidance=3.0, seed=0)
    builder.output("images", generate["images"])
    graph = builder.build()
    states = engine.run(graph).values["encode"]["conditioning"].states  # warm: loads models
    seeds = iter(range(1, 10_000))

    def through_graph() -> None:
        # A new seed each time: the generate node really runs (encode stays cached, as in a seed sweep).
        engine.run(_with_seed(graph, next(seeds)))

    def direct() -> None:
        direct_loop(unet, vae, scheduler_config, states, steps, next(seeds))

    measured = alternate({"direct_diffusers": direct, "sfumato_graph": through_graph}, repeats=repeats)
    ratio = measured["sfumato_graph"].median / measured["direct_diffusers"].median
    for name, m in measured.items():
        print(f"  {name:<18} {fmt(m.median)} per image (±{m.spread:.0%})")
    print(f"  ratio: graph / direct = {ratio:.3f}")
    return {name: m.as_dict() for name, m in measured.items()} | {"ratio": {"graph_over_direct": ratio}}


def _with_seed(graph: Any, seed: int) -> Any:
    from sfumato import Graph

    document = graph.to_dict()
    document["nodes"]["generate"]["inputs"]["seed"] = seed
    return Graph.from_dict(document)
