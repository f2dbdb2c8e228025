"""ControlNet: a tiny random ControlNet made from the tiny SD UNet, saved as a diffusers folder,
loaded by the real loading code and run for two steps; offline edge-map preprocessors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_models import save_tiny_sd_pipeline

from sfumato import Engine, GraphBuilder, ImageBatch, NodeExecutionError, default_registry, validate_graph


def save_tiny_controlnet(model_folder, folder, seed):
    """A ControlNet shaped like the tiny UNet, with random (non-zero) output convolutions."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    # The tiny VAE halves the image: so does the control image's embedding (SD's quarters it three times).
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            for parameter in module.parameters():
                parameter.normal_(0, 0.3)
    net.save_pretrained(folder)
    return folder


def control_picture(path):
    image = Image.new("RGB", (16, 16), "black")
    ImageDraw.Draw(image).rectangle((3, 3, 12, 12), outline="white", width=2)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    sd = save_tiny_sd_pipeline(root / "sd")
    return {"sd": sd, "net": save_tiny_controlnet(sd, root / "net", 1), "net2": save_tiny_controlnet(sd, root / "net2", 2),
            "picture": control_picture(root / "square.png")}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def pixels(batch: ImageBatch) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in batch.images])


def control_graph(files, controls=(), edges=None):
    """controls = [(net key, scale, start, end)]; the control image is the picture (or its edge map)."""
    builder = GraphBuilder("control")
    picture = builder.add("image.load", "picture", path=str(files["picture"]))
    image = picture["images"]
    if edges is not None:
        image = builder.add("control.edges", "edges", images=image, method=edges)["images"]
    stack = None
    for index, (net, scale, start, end) in enumerate(controls):
        inputs = {"images": image, "model": str(files[net]), "scale": scale, "start": start, "end": end}
        if stack is not None:
            inputs["stack"] = stack["control"]
        stack = builder.add("diffusion.controlnet", f"net{index}", **inputs)
    extra = {"control": stack["control"]} if stack is not None else {}
    gen = builder.add("diffusion.generate", "gen", model=str(files["sd"]), prompt="a red square", steps=2, seed=4,
                      **extra)
    builder.output("images", gen["images"])
    return builder.build()


def run(engine, files, controls=(), edges=None):
    return pixels(engine.run(control_graph(files, controls, edges))["images"])


def test_a_control_image_changes_the_output_and_scale_zero_equals_no_controlnet(engine, files):
    base = run(engine, files)
    controlled = run(engine, files, [("net", 1.0, 0.0, 1.0)])
    zero = run(engine, files, [("net", 0.0, 0.0, 1.0)])
    assert not np.array_equal(base, controlled)
    assert np.array_equal(base, zero)


def test_several_controlnets_act_together(engine, files):
    one = run(engine, files, [("net", 1.0, 0.0, 1.0)])
    two = run(engine, files, [("net", 1.0, 0.0, 1.0), ("net2", 1.0, 0.0, 1.0)])
    second_off = run(engine, files, [("net", 1.0, 0.0, 1.0), ("net2", 0.0, 0.0, 1.0)])
    assert not np.array_equal(one, two)
    assert np.array_equal(one, second_off)


def test_guidance_start_and_end_limit_the_steps_a_controlnet_acts_on(engine, files):
    base = run(engine, files)
    whole = run(engine, files, [("net", 1.0, 0.0, 1.0)])
    first_half = run(engine, files, [("net", 1.0, 0.0, 0.5)])
    none_of_two = run(engine, files, [("net", 1.0, 0.6, 0.9)])  # 2 steps: neither lies inside 0.6..0.9
    assert not np.array_equal(first_half, whole) and not np.array_equal(first_half, base)
    assert np.array_equal(none_of_two, base)


def test_an_edge_map_from_the_offline_preprocessor_drives_a_controlnet(engine, files):
    controlled = run(engine, files, [("net", 1.0, 0.0, 1.0)], edges="canny")
    assert not np.array_equal(controlled, run(engine, files))


@pytest.mark.parametrize("method", ["canny", "sobel", "scharr", "prewitt", "roberts"])
def test_edge_maps_trace_the_outline_of_a_shape(engine, files, method):
    builder = GraphBuilder("edges")
    picture = builder.add("image.load", "picture", path=str(files["picture"]))
    edges = builder.add("control.edges", "edges", images=picture["images"], method=method, sigma=0.5)
    builder.output("images", edges["images"])
    edge = np.asarray(engine.run(builder.build())["images"].images[0].convert("L"), dtype=np.float64)
    assert edge[8, 8] == 0 and edge[0, 0] == 0  # inside and far outside the outline: flat
    assert edge[:, 1:6].max() > 100  # near the outline's left side: an edge


def _issues(graph):
    return validate_graph(graph, default_registry())


def test_a_folder_that_is_not_a_controlnet_is_refused_at_validation(files, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    for model, reason in [(other, "holds a AutoencoderKL, not a ControlNet"),
                          (files["sd"], "is a diffusion model folder"),
                          (tmp_path / "net.safetensors", "is a file")]:
        files_with = {**files, "bad": model}
        issues = _issues(control_graph(files_with, [("bad", 1.0, 0.0, 1.0)]))
        assert [i.path for i in issues] == ["nodes.net0.inputs.model"], issues
        assert reason in issues[0].message


def test_a_controlnet_for_another_family_is_refused_before_loading(files, tmp_path):
    sdxl = tmp_path / "sdxl-net"
    sdxl.mkdir()
    (sdxl / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "cross_attention_dim": 2048}))
    issues = _issues(control_graph({**files, "sdxl": sdxl}, [("sdxl", 1.0, 0.0, 1.0)]))
    assert [i.path for i in issues] == ["nodes.gen.inputs.control"] and "sdxl" in issues[0].message


def test_start_after_end_is_refused(engine, files):
    issues = _issues(control_graph(files, [("net", 1.0, 0.8, 0.2)]))
    assert [i.path for i in issues] == ["nodes.net0.inputs.end"]
    with pytest.raises(Exception, match="must be before end"):
        run(engine, files, [("net", 1.0, 0.8, 0.2)])


def test_control_images_must_match_the_outputs(engine, files, tmp_path):
    for name in ("a.png", "b.png"):
        control_picture(tmp_path / name)
    builder = GraphBuilder("count")
    picture = builder.add("image.load", "picture", path=str(tmp_path))
    net = builder.add("diffusion.controlnet", "net", images=picture["images"], model=str(files["net"]))
    gen = builder.add("diffusion.generate", "gen", model=str(files["sd"]), prompt="a cat", steps=2, batch_size=3,
                      control=net["control"])
    builder.output("images", gen["images"])
    with pytest.raises(NodeExecutionError, match="2 control images for 3 outputs"):
        engine.run(builder.build())


@pytest.mark.slow
def test_an_sdxl_controlnet_conditions_an_sdxl_model(engine, tmp_path):
    from tiny_models import save_tiny_sdxl_pipeline

    sdxl = save_tiny_sdxl_pipeline(tmp_path / "sdxl")
    net = save_tiny_controlnet(sdxl, tmp_path / "sdxl-net", 3)
    picture = control_picture(tmp_path / "square.png")

    def graph(scale):
        builder = GraphBuilder("sdxl-control")
        encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(sdxl))
        image = builder.add("image.load", "picture", path=str(picture))
        extra = {}
        if scale is not None:
            extra["control"] = builder.add("diffusion.controlnet", "net", images=image["images"], model=str(net),
                                           scale=scale)["control"]
        gen = builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model=str(sdxl), steps=2,
                          guidance=5.0, **extra)
        builder.output("images", gen["images"])
        return builder.build()

    base = pixels(engine.run(graph(None))["images"])
    assert not np.array_equal(base, pixels(engine.run(graph(1.0))["images"]))
    assert np.array_equal(base, pixels(engine.run(graph(0.0))["images"]))
