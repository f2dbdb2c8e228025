"""The SDXL refiner: the base model stops at denoising_end, the refiner finishes from denoising_start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import save_tiny_sdxl_pipeline, save_tiny_sdxl_refiner

from sfumato import Engine, Graph, GraphBuilder, default_registry, validate_graph

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner")
    return save_tiny_sdxl_pipeline(root / "base"), save_tiny_sdxl_refiner(root / "refiner")


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def ensemble_graph(base, refiner, steps=4, split=0.5, guidance=5.0, seed=3):
    builder = GraphBuilder("ensemble")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(base))
    negative = builder.add("encode.sdxl", "neg", texts="a dog", model=str(base))
    generate = builder.add("diffusion.generate", "base", conditioning=encode["conditioning"],
                           negative=negative["conditioning"], model=str(base), steps=steps, guidance=guidance,
                           scheduler="euler", denoising_end=split, seed=seed)
    refine_encode = builder.add("encode.sdxl", "renc", texts="a red circle", model=str(refiner))
    refine_negative = builder.add("encode.sdxl", "rneg", texts="a dog", model=str(refiner))
    refine = builder.add("sdxl.refine", "refine", latent=generate["latent"], conditioning=refine_encode["conditioning"],
                         negative=refine_negative["conditioning"], model=str(refiner), steps=steps,
                         denoising_start=split, guidance=guidance, seed=seed)
    builder.output("images", refine["images"])
    builder.output("latent", refine["latent"])
    builder.output("base_latent", generate["latent"])
    builder.output("c", refine_encode["conditioning"])
    builder.output("n", refine_negative["conditioning"])
    builder.output("bc", encode["conditioning"])
    builder.output("bn", negative["conditioning"])
    return builder.build()


def test_encode_sdxl_of_a_refiner_folder_gives_clip_g_states_and_pooled_projection(engine, models):
    _, refiner = models
    builder = GraphBuilder("enc")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(refiner))
    builder.output("c", encode["conditioning"])
    conditioning = engine.run(builder.build())["c"]
    assert conditioning.family == "sdxl" and conditioning.width == 32
    assert tuple(conditioning.states.shape) == (1, 16, 32) and tuple(conditioning.pooled.shape) == (1, 32)


def test_base_then_refiner_equals_diffusers_base_and_img2img_pipelines_with_denoising_end_and_start(engine, models):
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base, refiner = models
    result = engine.run(ensemble_graph(base, refiner))
    images = result["images"].images
    assert len(images) == 1 and images[0].size == (16, 16) and np.asarray(images[0]).std() > 0

    base_pipe = StableDiffusionXLPipeline.from_pretrained(base).to("cpu")
    base_pipe.set_progress_bar_config(disable=True)
    bc, bn = result["bc"], result["bn"]
    with torch.inference_mode():
        base_latents = base_pipe(prompt_embeds=bc.states, negative_prompt_embeds=bn.states,
                                 pooled_prompt_embeds=bc.pooled, negative_pooled_prompt_embeds=bn.pooled,
                                 num_inference_steps=4, guidance_scale=5.0, denoising_end=0.5, height=16, width=16,
                                 generator=[torch.Generator().manual_seed(3)], output_type="latent").images
    assert torch.allclose(result["base_latent"].samples, base_latents, atol=1e-4)

    refiner_pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(refiner).to("cpu")
    refiner_pipe.set_progress_bar_config(disable=True)
    c, n = result["c"], result["n"]
    with torch.inference_mode():
        refined = refiner_pipe(image=base_latents, prompt_embeds=c.states, negative_prompt_embeds=n.states,
                               pooled_prompt_embeds=c.pooled, negative_pooled_prompt_embeds=n.pooled,
                               num_inference_steps=4, guidance_scale=5.0, denoising_start=0.5,
                               generator=[torch.Generator().manual_seed(3)], output_type="latent").images
    assert torch.allclose(result["latent"].samples, refined, atol=1e-4)


def test_the_refiner_runs_only_the_steps_after_denoising_start(engine, models):
    base, refiner = models
    steps: dict[str, int] = {}
    engine.observers.append(lambda event: steps.__setitem__(event.node_id, event.total)
                            if event.kind == "node_progress" else None)
    try:
        engine.run(ensemble_graph(base, refiner, steps=10, split=0.8))
    finally:
        engine.observers.pop()
    assert steps["base"] == 8 and steps["refine"] == 2


def test_base_conditioning_into_the_refiner_is_refused_at_validation(models):
    base, refiner = models
    builder = GraphBuilder("bad")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(base))
    generate = builder.add("diffusion.generate", "base", conditioning=encode["conditioning"], model=str(base),
                           denoising_end=0.8)
    builder.add("sdxl.refine", "refine", latent=generate["latent"], conditioning=encode["conditioning"],
                model=str(refiner))
    [issue] = validate_graph(builder.build(), default_registry())
    assert issue.path == "nodes.refine.inputs.conditioning" and "width=64 (needs 32)" in issue.message


def test_an_sd_model_as_refiner_is_refused_at_validation(models, tmp_path):
    from tiny_models import save_tiny_sd_pipeline

    base, _ = models
    sd = save_tiny_sd_pipeline(tmp_path / "sd")
    builder = GraphBuilder("bad")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(base))
    generate = builder.add("diffusion.generate", "base", conditioning=encode["conditioning"], model=str(base))
    builder.add("sdxl.refine", "refine", latent=generate["latent"], conditioning=encode["conditioning"], model=str(sd))
    issues = validate_graph(builder.build(), default_registry())
    assert any(issue.path == "nodes.refine.inputs.model" and "not an SDXL model" in issue.message for issue in issues)


def test_the_shipped_sdxl_refiner_graph_runs_a_base_and_a_refiner_folder(models, tmp_path):
    base, refiner = models
    graph = Graph.load(REPO / "graphs" / "sdxl-refiner.json")
    result = Engine(device="cpu", output_dir=tmp_path).run(graph, model=str(base), refiner=str(refiner), steps=2,
                                                           prompt="a red circle", negative_prompt="a dog")
    [path] = result.report.files
    assert Path(path).exists()


def test_a_refiner_starting_where_the_base_did_not_stop_is_refused_at_validation(models):
    base, refiner = models
    graph = ensemble_graph(base, refiner, split=0.8).to_dict()
    graph["nodes"]["base"]["inputs"].pop("denoising_end")  # the base denoises fully: the refiner would redo it
    from sfumato import Graph

    [issue] = validate_graph(Graph.from_dict(graph), default_registry())
    assert issue.path == "nodes.refine.inputs.latent"
    assert "base.latent provides denoising_end=1.0 (needs 0.8)" in issue.message
    graph["nodes"]["base"]["inputs"]["denoising_end"] = 0.7
    [issue] = validate_graph(Graph.from_dict(graph), default_registry())
    assert "denoising_end=0.7 (needs 0.8)" in issue.message


def test_the_library_lists_a_refiner_as_such_and_never_takes_its_configs_for_base_single_files(models, tmp_path,
                                                                                              monkeypatch):
    import shutil

    from sfumato_diffusers.library import config_folder_for, scan

    base, refiner = models
    library = tmp_path / "library"
    shutil.copytree(refiner, library / "a-refiner")  # listed first
    shutil.copytree(base, library / "b-base")
    kinds = {entry.name: (entry.kind, entry.family) for entry in scan([library])}
    assert kinds == {"a-refiner": ("refiner", "sdxl"), "b-base": ("pipeline", "sdxl")}
    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    assert config_folder_for("sdxl") == library / "b-base"


def test_single_file_base_and_refiner_checkpoints_run_the_ensemble_with_their_own_weights(models, tmp_path,
                                                                                        monkeypatch):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from sfumato import Registry
    from sfumato_diffusers.library import scan
    from tiny_models import save_single_file

    base, refiner = models
    library = tmp_path / "library"
    shutil.copytree(base, library / "sdxl-base")
    shutil.copytree(refiner, library / "sdxl-refiner")
    tuned = shutil.copytree(refiner, tmp_path / "tuned-refiner")
    weights = tuned / "unet" / "diffusion_pytorch_model.safetensors"
    torch.manual_seed(3)
    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in load_file(weights).items()}, weights)
    save_single_file(base, library / "files" / "base.safetensors", "sdxl")
    save_single_file(tuned, library / "files" / "refiner.safetensors", "sdxl-refiner")
    kinds = {entry.name: (entry.kind, entry.family) for entry in scan([library])}
    assert kinds["refiner"] == ("refiner", "sdxl") and kinds["base"] == ("checkpoint", "sdxl")
    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    engine = Engine(Registry.load(), device="cpu", cache=False)
    result = engine.run(ensemble_graph(library / "files" / "base.safetensors",
                                       library / "files" / "refiner.safetensors"))
    assert result["images"].images[0].size == (16, 16)
    refiner_key = f"diffusion:{library}/files/refiner.safetensors"
    [(key, device, dtype)] = [k for k in engine.models.loaded() if k[0] == refiner_key]
    unet = engine.models.get(key, device, dtype, lambda: None).unet.state_dict()
    assert all(torch.equal(unet[k], v) for k, v in load_file(weights).items())
