"""IP-Adapter: a tiny random IP-Adapter for the tiny SD UNet and a tiny random CLIP vision encoder
(CLIPVisionModelWithProjection) saved to a folder, loaded by the real loading code, two steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_models import save_tiny_sd_pipeline

from sfumato import Engine, GraphBuilder, ImageBatch, default_registry, validate_graph

PROJECTION = 24  # the encoder's image-embedding size (the adapter's input)


def save_tiny_vision_encoder(folder):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=16, patch_size=4, projection_dim=PROJECTION)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def save_tiny_ip_adapter(model_folder, path, seed):
    """image_proj.* (an ImageProjection to 4 tokens) and ip_adapter.{1,3,...}.to_k_ip/to_v_ip per cross-attention."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    width = unet.config.cross_attention_dim
    tensors = {"image_proj.proj.weight": torch.randn(4 * width, PROJECTION) * 0.2,
               "image_proj.proj.bias": torch.zeros(4 * width),
               "image_proj.norm.weight": torch.ones(width), "image_proj.norm.bias": torch.zeros(width)}
    key = 1
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            hidden = module.to_k.out_features
            tensors[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, width) * 0.5
            tensors[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, width) * 0.5
            key += 2
    save_file(tensors, path)
    return path


def reference(path, colour):
    image = Image.new("RGB", (16, 16), "black")
    ImageDraw.Draw(image).ellipse((2, 2, 13, 13), fill=colour)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ip")
    sd = save_tiny_sd_pipeline(root / "sd")
    mask = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 7, 15), fill=255)
    mask.save(root / "mask.png")
    return {"sd": sd, "adapter": save_tiny_ip_adapter(sd, root / "ip.safetensors", 1),
            "encoder": save_tiny_vision_encoder(root / "encoder"), "red": reference(root / "red.png", "red"),
            "blue": reference(root / "blue.png", "blue"), "mask": root / "mask.png"}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def pixels(batch: ImageBatch) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in batch.images])


def ip_graph(files, image=None, scale=1.0, mask=False, adapter=None, encoder=None):
    builder = GraphBuilder("ip")
    extra = {}
    if image is not None:
        picture = builder.add("image.load", "picture", path=str(files[image]))
        inputs = {"images": picture["images"], "adapter": str(adapter or files["adapter"]),
                  "encoder": str(encoder or files["encoder"]), "scale": scale}
        if mask:
            inputs["mask"] = builder.add("image.load", "mask", path=str(files["mask"]), mode="L")["images"]
        extra["image_prompt"] = builder.add("diffusion.ip_adapter", "ip", **inputs)["image_prompt"]
    gen = builder.add("diffusion.generate", "gen", model=str(files["sd"]), prompt="a circle", steps=2, seed=6,
                      **extra)
    builder.output("images", gen["images"])
    return builder.build()


def run(engine, files, **options):
    return pixels(engine.run(ip_graph(files, **options))["images"])


def test_an_image_prompt_changes_the_output_and_scale_zero_equals_no_image_prompt(engine, files):
    base = run(engine, files)
    red = run(engine, files, image="red")
    blue = run(engine, files, image="blue")
    zero = run(engine, files, image="red", scale=0.0)
    assert not np.array_equal(base, red) and not np.array_equal(red, blue)
    assert np.array_equal(zero, base)


def test_the_shared_model_is_unchanged_after_a_run_with_an_image_prompt(engine, files):
    base = run(engine, files)
    run(engine, files, image="red", scale=0.8)
    assert np.array_equal(run(engine, files), base)


def test_changing_the_scale_reloads_nothing(engine, files, monkeypatch):
    from diffusers import UNet2DConditionModel

    run(engine, files, image="red")
    loads = []
    original = UNet2DConditionModel._load_ip_adapter_weights
    monkeypatch.setattr(UNet2DConditionModel, "_load_ip_adapter_weights",
                        lambda self, *a, **k: (loads.append(1), original(self, *a, **k))[1])
    half = run(engine, files, image="red", scale=0.5)
    full = run(engine, files, image="red", scale=1.0)
    assert loads == [] and not np.array_equal(half, full)


def test_a_mask_limits_where_the_image_prompt_acts(engine, files):
    everywhere = run(engine, files, image="red")
    masked = run(engine, files, image="red", mask=True)
    assert not np.array_equal(everywhere, masked)


def _issues(graph):
    return validate_graph(graph, default_registry())


def test_wrong_files_are_refused_at_validation_naming_the_field(files, tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"unet.a.lora_A.weight": torch.zeros(2, 2)}, lora)
    issues = _issues(ip_graph(files, image="red", adapter=lora))
    assert [i.path for i in issues] == ["nodes.ip.inputs.adapter"] and "is a LoRA" in issues[0].message
    issues = _issues(ip_graph(files, image="red", encoder=files["sd"] / "text_encoder"))
    assert [i.path for i in issues] == ["nodes.ip.inputs.encoder"] and "not a CLIP vision encoder" in issues[0].message
    other = tmp_path / "encoder"
    other.mkdir()
    config = json.loads((files["encoder"] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "projection_dim": 8}))
    issues = _issues(ip_graph(files, image="red", encoder=other))
    assert [i.path for i in issues] == ["nodes.ip.inputs.encoder"] and "expects 24" in issues[0].message


def test_an_adapter_that_does_not_fit_fails_naming_the_file_and_leaves_the_model_clean(engine, files, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from sfumato import NodeExecutionError

    base = run(engine, files)
    tensors = load_file(files["adapter"])
    tensors["ip_adapter.1.to_k_ip.weight"] = torch.ones(7, 32)  # the UNet's attention is 64 wide there
    misfit = tmp_path / "misfit.safetensors"
    save_file(tensors, misfit)
    with pytest.raises(NodeExecutionError, match="does not fit model") as failure:
        run(engine, files, image="red", adapter=misfit)
    assert str(misfit) in str(failure.value)
    assert np.array_equal(run(engine, files), base)
