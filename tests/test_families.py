"""Model families: SDXL next to SD 1.x/2.x, with tiny random models saved as users have them."""

from __future__ import annotations

import numpy as np
import pytest

from sfumato import Engine, GraphBuilder, SfumatoError, default_registry, validate_graph
from tiny_models import save_tiny_sd_pipeline, save_tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {"sd": save_tiny_sd_pipeline(root / "sd"), "sdxl": save_tiny_sdxl_pipeline(root / "sdxl")}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def sdxl_graph(model, node_type="diffusion.generate", **inputs):
    builder = GraphBuilder("sdxl")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(model))
    gen = builder.add(node_type, "gen", conditioning=encode["conditioning"], model=str(model),
                      **{"steps": 2, **inputs})
    builder.output("images", gen["images"])
    return builder.build()


def test_sdxl_folder_generates_from_encode_sdxl_conditioning_in_two_steps(engine, models):
    result = engine.run(sdxl_graph(models["sdxl"], batch_size=2, guidance=5.0))
    images = result["images"].images
    assert len(images) == 2 and images[0].size == (16, 16)
    assert np.asarray(images[0]).std() > 0


def test_generate_image_dispatches_an_sdxl_folder_to_the_diffusion_generator(engine, models):
    result = engine.run(sdxl_graph(models["sdxl"], node_type="generate.image"))
    assert len(result["images"]) == 1


def test_sdxl_conditioning_has_both_encoders_states_and_the_pooled_projection(engine, models):
    builder = GraphBuilder("enc")
    encode = builder.add("encode.sdxl", "enc", texts=["a red circle", "a dog"], model=str(models["sdxl"]))
    builder.output("c", encode["conditioning"])
    conditioning = engine.run(builder.build())["c"]
    assert conditioning.family == "sdxl" and conditioning.width == 64
    assert tuple(conditioning.states.shape) == (2, 16, 64) and tuple(conditioning.pooled.shape) == (2, 32)


def test_sd15_conditioning_into_an_sdxl_unet_is_refused_at_validation(models):
    builder = GraphBuilder("bad")
    encode = builder.add("encode.text", "enc", texts="a red circle", model=str(models["sd"] / "text_encoder"),
                         max_length=16)
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model=str(models["sdxl"]))
    [issue] = validate_graph(builder.build(), default_registry())
    assert issue.path == "nodes.gen.inputs.conditioning"
    assert "family='sd' (needs 'sdxl')" in issue.message


def test_sdxl_conditioning_into_an_sd15_unet_is_refused_at_validation(models):
    builder = GraphBuilder("bad")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(models["sdxl"]))
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model=str(models["sd"]))
    [issue] = validate_graph(builder.build(), default_registry())
    assert "width=64 (needs 32)" in issue.message


def test_an_sdxl_model_given_a_prompt_asks_for_encode_sdxl(engine, models):
    builder = GraphBuilder("g")
    gen = builder.add("diffusion.generate", "gen", prompt="a red circle", model=str(models["sdxl"]), steps=2)
    builder.output("images", gen["images"])
    with pytest.raises(SfumatoError, match="encode.sdxl"):
        engine.run(builder.build())


def test_a_hub_id_not_on_disk_fails_at_once_with_not_found_locally(engine, monkeypatch, tmp_path):
    import socket

    attempts = []

    def no_network(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # offline or not, nothing is fetched
    builder = GraphBuilder("g")
    gen = builder.add("diffusion.generate", "gen", prompt="a red circle", model="nobody/no-such-model", steps=2)
    builder.output("images", gen["images"])
    with pytest.raises(SfumatoError, match="not found locally") as error:
        engine.run(builder.build())
    assert "hf download nobody/no-such-model" in str(error.value)
    assert attempts == []  # not one connection tried: it fails at once, not after hub timeouts


def test_encode_text_with_a_hub_id_not_on_disk_fails_with_not_found_locally(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    builder = GraphBuilder("g")
    encode = builder.add("encode.text", "enc", texts="a red circle", model="nobody/no-such-encoder")
    builder.output("c", encode["conditioning"])
    with pytest.raises(SfumatoError, match="'nobody/no-such-encoder' not found locally"):
        engine.run(builder.build())


def test_the_shipped_sdxl_graph_runs_a_user_sdxl_folder(models, tmp_path):
    from pathlib import Path

    from sfumato import Graph

    graph = Graph.load(Path(__file__).resolve().parents[1] / "graphs" / "sdxl.json")
    result = Engine(device="cpu", output_dir=tmp_path).run(graph, model=str(models["sdxl"]), steps=2,
                                                           prompt="a red circle", negative_prompt="a dog")
    [path] = result.report.files
    assert Path(path).exists()


# -- single-file checkpoints -----------------------------------------------------------


@pytest.fixture(scope="module")
def single_file_library(tmp_path_factory, models):
    """A library with a diffusers SD folder (the configs) and a checkpoint of another SD model as one file."""
    import shutil

    from tiny_models import save_sd_single_file

    root = tmp_path_factory.mktemp("single")
    shutil.copytree(models["sd"], root / "sd-base")
    other = save_tiny_sd_pipeline(root / "build" / "other")
    import torch
    from safetensors.torch import load_file, save_file

    # Different weights from sd-base, so the test shows the file's weights are the ones used.
    weights = other / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in load_file(weights).items()}, weights)
    save_sd_single_file(other, root / "checkpoints" / "fine-tune.safetensors")
    expected = load_file(weights)
    shutil.rmtree(root / "build")  # the library holds the base folder and the single file only
    return root, expected


def test_a_single_file_sd_checkpoint_loads_with_the_library_configs_and_runs_two_steps(
        single_file_library, monkeypatch, tmp_path):
    root, expected = single_file_library
    monkeypatch.setenv("SFUMATO_MODELS", str(root))
    engine = Engine(device="cpu", cache=False)
    builder = GraphBuilder("g")
    gen = builder.add("diffusion.generate", "gen", prompt="a red circle", model=str(root / "checkpoints" /
                                                                                   "fine-tune.safetensors"), steps=2)
    builder.output("images", gen["images"])
    result = engine.run(builder.build())
    assert result["images"].images[0].size == (16, 16)
    [(key, _, _)] = [k for k in engine.models.loaded() if "fine-tune" in k[0]]
    loaded = engine.models.get(key, "cpu", "float32", lambda: None)
    assert all(np.array_equal(loaded.unet.state_dict()[k].numpy(), v.numpy()) for k, v in expected.items())


def test_a_single_file_without_a_config_folder_of_its_family_says_what_to_add(single_file_library, monkeypatch,
                                                                              tmp_path):
    root, _ = single_file_library
    monkeypatch.setenv("SFUMATO_MODELS", str(tmp_path))
    builder = GraphBuilder("g")
    gen = builder.add("diffusion.generate", "gen", prompt="x", model=str(root / "checkpoints" / "fine-tune.safetensors"))
    builder.output("images", gen["images"])
    with pytest.raises(SfumatoError, match="single-file sd checkpoint.*diffusers sd folder in the model library"):
        Engine(device="cpu", cache=False).run(builder.build())


def test_a_single_file_that_is_no_checkpoint_is_refused_naming_what_it_is(tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 768)}, lora)
    builder = GraphBuilder("g")
    gen = builder.add("diffusion.generate", "gen", prompt="x", model=str(lora))
    builder.output("images", gen["images"])
    with pytest.raises(SfumatoError, match="is a sd lora, not a Stable Diffusion"):
        Engine(device="cpu", cache=False).run(builder.build())


def test_a_single_file_that_is_no_checkpoint_is_refused_at_validation(tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 2048), "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8)},
              lora)
    builder = GraphBuilder("g")
    builder.add("diffusion.generate", "gen", prompt="x", model=str(lora))
    [issue] = validate_graph(builder.build(), default_registry())
    assert issue.path == "nodes.gen.inputs.model" and "is a sdxl lora" in issue.message


# -- Flux --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux_model(tmp_path_factory):
    from tiny_models import save_tiny_flux_pipeline

    return save_tiny_flux_pipeline(tmp_path_factory.mktemp("flux") / "flux")


def flux_graph(model, **inputs):
    builder = GraphBuilder("flux")
    encode = builder.add("encode.flux", "enc", texts="a red circle", model=str(model))
    gen = builder.add("flux.generate", "gen", conditioning=encode["conditioning"], model=str(model),
                      **{"steps": 2, **inputs})
    builder.output("images", gen["images"])
    return builder.build()


def test_a_flux_folder_generates_from_encode_flux_in_two_steps(engine, flux_model):
    images = engine.run(flux_graph(flux_model, batch_size=2, width=16, height=16))["images"].images
    assert len(images) == 2 and images[0].size == (16, 16) and np.asarray(images[0]).std() > 0


def test_flux_image_i_of_a_batch_equals_that_image_made_alone_with_its_seed(engine, flux_model):
    from sfumato import image_seed

    batch = engine.run(flux_graph(flux_model, batch_size=2, seed=7, width=16, height=16))["images"].images
    alone = engine.run(flux_graph(flux_model, seed=image_seed(7, 1), width=16, height=16))["images"].images
    assert np.abs(np.asarray(batch[1], dtype=int) - np.asarray(alone[0], dtype=int)).max() <= 1


def test_sd_or_sdxl_conditioning_into_flux_is_refused_at_validation(models, flux_model):
    builder = GraphBuilder("bad")
    encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(models["sdxl"]))
    builder.add("flux.generate", "gen", conditioning=encode["conditioning"], model=str(flux_model))
    [issue] = validate_graph(builder.build(), default_registry())
    assert "family='sdxl' (needs 'flux')" in issue.message


def test_the_shipped_flux_graph_runs_a_user_flux_folder(flux_model, tmp_path):
    from pathlib import Path

    from sfumato import Graph

    graph = Graph.load(Path(__file__).resolve().parents[1] / "graphs" / "flux.json")
    result = Engine(device="cpu", output_dir=tmp_path).run(graph, model=str(flux_model), steps=2, width=16, height=16)
    [path] = result.report.files
    assert Path(path).exists()


# -- SD3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd3_model(tmp_path_factory):
    from tiny_models import save_tiny_sd3_pipeline

    return save_tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3") / "sd3")


def sd3_graph(model, **inputs):
    builder = GraphBuilder("sd3")
    encode = builder.add("encode.sd3", "enc", texts="a red circle", model=str(model))
    negative = builder.add("encode.sd3", "neg", texts="", model=str(model))
    gen = builder.add("sd3.generate", "gen", conditioning=encode["conditioning"], negative=negative["conditioning"],
                      model=str(model), **{"steps": 2, **inputs})
    builder.output("images", gen["images"])
    return builder.build()


def test_an_sd3_folder_generates_from_encode_sd3_in_two_steps(engine, sd3_model):
    images = engine.run(sd3_graph(sd3_model, batch_size=2))["images"].images
    assert len(images) == 2 and images[0].size == (16, 16) and np.asarray(images[0]).std() > 0


def test_sd3_conditioning_joins_both_clips_padded_to_t5_and_t5_in_one_sequence(engine, sd3_model):
    builder = GraphBuilder("enc")
    encode = builder.add("encode.sd3", "enc", texts="a red circle", model=str(sd3_model), max_length=8)
    builder.output("c", encode["conditioning"])
    conditioning = engine.run(builder.build())["c"]
    assert conditioning.family == "sd3" and tuple(conditioning.states.shape) == (1, 16 + 8, 32)
    assert tuple(conditioning.pooled.shape) == (1, 64)


def test_flux_conditioning_into_sd3_is_refused_at_validation(sd3_model, flux_model):
    builder = GraphBuilder("bad")
    encode = builder.add("encode.flux", "enc", texts="a red circle", model=str(flux_model))
    builder.add("sd3.generate", "gen", conditioning=encode["conditioning"], model=str(sd3_model), guidance=1.0)
    [issue] = validate_graph(builder.build(), default_registry())
    assert "family='flux' (needs 'sd3')" in issue.message


def test_the_shipped_sd3_graph_runs_a_user_sd3_folder(sd3_model, tmp_path):
    from pathlib import Path

    from sfumato import Graph

    graph = Graph.load(Path(__file__).resolve().parents[1] / "graphs" / "sd3.json")
    result = Engine(device="cpu", output_dir=tmp_path).run(graph, model=str(sd3_model), steps=2)
    [path] = result.report.files
    assert Path(path).exists()


@pytest.mark.parametrize(("family", "count"), [("flux", 1), ("sd3", 1)])
def test_generate_image_dispatches_flux_and_sd3_folders_to_their_generators(engine, flux_model, sd3_model, family,
                                                                           count):
    model = flux_model if family == "flux" else sd3_model
    builder = GraphBuilder("g")
    encode = builder.add(f"encode.{family}", "enc", texts="a red circle", model=str(model))
    gen = builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=str(model), steps=2,
                      guidance=1.0)
    builder.output("images", gen["images"])
    assert len(engine.run(builder.build())["images"]) == count


def test_the_library_lists_flux_and_sd3_folders_with_their_family(flux_model, sd3_model, models):
    from sfumato_diffusers.library import scan

    families = {entry.name: entry.family for entry in scan([flux_model.parent, sd3_model.parent, models["sdxl"].parent])}
    assert families["flux"] == "flux" and families["sd3"] == "sd3" and families["sdxl"] == "sdxl"
