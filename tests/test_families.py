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
