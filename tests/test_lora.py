"""LoRA stacks: tiny LoRAs made with peft on the tiny SD model, saved as safetensors in the
diffusers, kohya and peft key formats, loaded by the real loading code, run for two steps."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import save_tiny_sd_pipeline

from sfumato import Engine, GraphBuilder, ImageBatch, default_registry, validate_graph

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _peft_lora(module, targets, seed):
    """A random (non-zero) LoRA on ``module`` through peft; its state dict in peft naming."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False), module)
    return {k: (v * 0.5).contiguous() for k, v in get_peft_model_state_dict(module).items()}


def _to_kohya(prefix, state):
    out = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".lora_")
        name = prefix + module.replace(".", "_")
        out[f"{name}.lora_down.weight" if kind.startswith("A") else f"{name}.lora_up.weight"] = value
        out[f"{name}.alpha"] = __import__("torch").tensor(4.0)
    return out


def save_lora(model_folder, path, seed, key_format="diffusers"):
    """Save a LoRA for the tiny SD model's UNet and text encoder in ``key_format``.

    Text-encoder keys are named as in files people have (``text_model.…``), which
    transformers 5's flattened CLIPTextModel no longer uses (raw peft files do not have it).
    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = _peft_lora(UNet2DConditionModel.from_pretrained(model_folder / "unet"), UNET_TARGETS, seed)
    text = _peft_lora(CLIPTextModel.from_pretrained(model_folder / "text_encoder"), TEXT_TARGETS, seed + 1)
    if key_format == "diffusers":
        tensors = {**{f"unet.{k}": v for k, v in unet.items()}, **{f"text_encoder.text_model.{k}": v for k, v in text.items()}}
    elif key_format == "peft":
        tensors = {f"base_model.model.{k}": v for k, v in {**unet, **text}.items()}
    else:
        tensors = {**_to_kohya("lora_unet_", unet), **_to_kohya("lora_te_text_model_", text)}
    save_file(tensors, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    sd = save_tiny_sd_pipeline(root / "sd")
    return {"sd": sd, "a": save_lora(sd, root / "a.safetensors", 1), "b": save_lora(sd, root / "b.safetensors", 5),
            "kohya": save_lora(sd, root / "a-kohya.safetensors", 1, "kohya"),
            "peft": save_lora(sd, root / "a-peft.safetensors", 1, "peft")}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)  # every run really generates, on one shared cached model


def pixels(batch: ImageBatch) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in batch.images])


def lora_graph(model, loras=(), fuse=False):
    """diffusion.generate with a chain of diffusion.lora nodes: loras = [(path, strength, text_strength)]."""
    builder = GraphBuilder("lora")
    stack = None
    for index, (path, strength, text_strength) in enumerate(loras):
        inputs = {"path": str(path), "strength": strength, "text_strength": text_strength}
        if stack is not None:
            inputs["stack"] = stack["loras"]
        if fuse and index == len(loras) - 1:
            inputs["fuse"] = True
        stack = builder.add("diffusion.lora", f"lora{index}", **inputs)
    extra = {"loras": stack["loras"]} if stack is not None else {}
    gen = builder.add("diffusion.generate", "gen", model=str(model), prompt="a red circle", steps=2, seed=3, **extra)
    builder.output("images", gen["images"])
    return builder.build()


def run(engine, model, loras=(), fuse=False):
    return pixels(engine.run(lora_graph(model, loras, fuse))["images"])


def test_a_lora_changes_the_image_and_strength_zero_equals_the_base_model(engine, files):
    base = run(engine, files["sd"])
    full = run(engine, files["sd"], [(files["a"], 1.0, 1.0)])
    zero = run(engine, files["sd"], [(files["a"], 0.0, 0.0)])
    assert not np.array_equal(base, full)
    assert np.array_equal(base, zero)


def test_unet_and_text_encoder_strengths_are_separate(engine, files):
    base = run(engine, files["sd"])
    text_only = run(engine, files["sd"], [(files["a"], 0.0, 1.0)])
    unet_only = run(engine, files["sd"], [(files["a"], 1.0, 0.0)])
    both = run(engine, files["sd"], [(files["a"], 1.0, 1.0)])
    assert not np.array_equal(base, text_only) and not np.array_equal(base, unet_only)
    assert not np.array_equal(unet_only, both)


def test_changing_only_a_strength_loads_nothing(engine, files, monkeypatch):
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    run(engine, files["sd"], [(files["b"], 1.0, 1.0)])  # loaded (or already loaded) once
    loads = []
    original = StableDiffusionLoraLoaderMixin.lora_state_dict.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionLoraLoaderMixin, "lora_state_dict", classmethod(counting))
    half = run(engine, files["sd"], [(files["b"], 0.5, 0.5)])
    full = run(engine, files["sd"], [(files["b"], 1.0, 1.0)])
    assert loads == [] and not np.array_equal(half, full)


def test_two_loras_on_the_shared_model_do_not_leak_into_a_run_without_loras(engine, files):
    base = run(engine, files["sd"])
    stacked = run(engine, files["sd"], [(files["a"], 0.8, 1.0), (files["b"], 0.6, 0.4)])
    only_a = run(engine, files["sd"], [(files["a"], 0.8, 1.0)])
    after = run(engine, files["sd"])
    assert not np.array_equal(stacked, base) and not np.array_equal(stacked, only_a)
    assert np.array_equal(after, base)


@pytest.mark.slow
@pytest.mark.parametrize("key_format", ["kohya", "peft"])
def test_kohya_and_peft_key_formats_give_the_diffusers_format_images(engine, files, key_format):
    wanted = run(engine, files["sd"], [(files["a"], 1.0, 1.0)])
    got = run(engine, files["sd"], [(files[key_format], 1.0, 1.0)])
    assert np.abs(wanted - got).max() <= 1


@pytest.mark.slow
def test_fused_stack_gives_the_unfused_images_and_is_unfused_after_the_run(engine, files):
    base = run(engine, files["sd"])
    unfused = run(engine, files["sd"], [(files["a"], 0.7, 1.0), (files["b"], 0.5, 1.0)])
    fused = run(engine, files["sd"], [(files["a"], 0.7, 1.0), (files["b"], 0.5, 1.0)], fuse=True)
    assert np.abs(unfused - fused).max() <= 2
    assert np.array_equal(run(engine, files["sd"]), base)


def _issues(graph):
    return validate_graph(graph, default_registry())


def test_a_file_that_is_not_a_lora_is_refused_at_validation_naming_node_field_and_file(files, tmp_path):
    import torch
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, checkpoint)
    pickled = tmp_path / "old.ckpt"
    pickled.write_bytes(b"not safetensors")
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for path, reason in [(checkpoint, "full model checkpoint"), (pickled, "not a .safetensors file"),
                         (garbled, "not a readable .safetensors file"),
                         (tmp_path / "missing.safetensors", "does not exist")]:
        issues = _issues(lora_graph(files["sd"], [(path, 1.0, 1.0)]))
        assert [(i.node, i.path) for i in issues] == [("lora0", "nodes.lora0.inputs.path")], issues
        assert reason in issues[0].message and str(path) in issues[0].message


def test_a_lora_for_another_family_is_refused_before_loading(files, tmp_path):
    import torch
    from safetensors.torch import save_file

    sdxl = tmp_path / "sdxl-lora.safetensors"
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 2048), f"{key}.lora_B.weight": torch.zeros(64, 4)}, sdxl)
    issues = _issues(lora_graph(files["sd"], [(sdxl, 1.0, 1.0)]))
    assert [i.path for i in issues] == ["nodes.gen.inputs.loras"], issues
    assert "sdxl" in issues[0].message
    mixed = _issues(lora_graph(files["sd"], [(files["a"], 1.0, 1.0), (sdxl, 1.0, 1.0)]))
    assert "nodes.lora1.inputs.stack" in [i.path for i in mixed]


@pytest.mark.slow
def test_a_unet_lora_applies_to_an_sdxl_model_and_strength_zero_equals_the_base(engine, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from tiny_models import save_tiny_sdxl_pipeline

    sdxl = save_tiny_sdxl_pipeline(tmp_path / "sdxl")
    unet = _peft_lora(UNet2DConditionModel.from_pretrained(sdxl / "unet"), UNET_TARGETS, 9)
    save_file({f"unet.{k}": v for k, v in unet.items()}, tmp_path / "xl.safetensors")

    def graph(strength):
        builder = GraphBuilder("sdxl-lora")
        encode = builder.add("encode.sdxl", "enc", texts="a red circle", model=str(sdxl))
        extra = {}
        if strength is not None:
            extra["loras"] = builder.add("diffusion.lora", "lora", path=str(tmp_path / "xl.safetensors"),
                                         strength=strength)["loras"]
        gen = builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model=str(sdxl), steps=2,
                          guidance=5.0, **extra)
        builder.output("images", gen["images"])
        return builder.build()

    base = pixels(engine.run(graph(None))["images"])
    assert not np.array_equal(base, pixels(engine.run(graph(1.0))["images"]))
    assert np.array_equal(base, pixels(engine.run(graph(0.0))["images"]))
    assert np.array_equal(base, pixels(engine.run(graph(None))["images"]))


def test_a_changed_lora_file_is_a_new_cache_signature(files, tmp_path):
    import shutil

    cached = Engine(device="cpu", cache=True)
    path = tmp_path / "swap.safetensors"
    shutil.copy(files["a"], path)
    first = pixels(cached.run(lora_graph(files["sd"], [(path, 1.0, 1.0)]))["images"])
    shutil.copy(files["b"], path)
    second = pixels(cached.run(lora_graph(files["sd"], [(path, 1.0, 1.0)]))["images"])
    assert not np.array_equal(first, second)


def test_a_lora_that_does_not_fit_the_model_fails_naming_the_file_and_leaves_the_model_clean(engine, files, tmp_path):
    import torch
    from safetensors.torch import save_file

    from sfumato import NodeExecutionError

    base = run(engine, files["sd"])
    misfit = tmp_path / "misfit.safetensors"
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    save_file({f"{key}.lora_A.weight": torch.ones(4, 32), f"{key}.lora_B.weight": torch.ones(7, 4)}, misfit)
    with pytest.raises(NodeExecutionError, match="does not fit model") as failure:
        run(engine, files["sd"], [(misfit, 1.0, 1.0)])
    assert str(misfit) in str(failure.value)
    assert np.array_equal(run(engine, files["sd"]), base)


def test_png_metadata_records_the_lora_files_a_run_applied_with_their_hashes(files, tmp_path):
    import hashlib

    from sfumato import Graph, read_png_metadata

    graph = lora_graph(files["sd"], [(files["a"], 1.0, 1.0)]).to_dict()
    graph["nodes"]["save"] = {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}
    result = Engine(device="cpu", cache=False, output_dir=tmp_path).run(Graph.from_dict(graph))
    [path] = result.report.files
    recorded = read_png_metadata(path)["models"]
    assert recorded[str(files["a"])]["sha256"] == hashlib.sha256(files["a"].read_bytes()).hexdigest()
    assert str(files["sd"]) in recorded  # and the model they were applied to
