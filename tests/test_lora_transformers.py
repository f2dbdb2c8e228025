"""LoRA stacks on the SD3 and Flux transformers: tiny LoRAs made with peft on the tiny transformers,
saved as safetensors (diffusers and raw peft key formats), applied through diffusers' adapter API."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import save_tiny_flux_pipeline, save_tiny_sd3_pipeline

from sfumato import Engine, GraphBuilder, ImageBatch, default_registry, validate_graph

TARGETS = ["to_q", "to_k", "to_v"]


def save_transformer_lora(model_folder, family, path, seed, key_format="diffusers"):
    """A random (non-zero) LoRA made with peft on the folder's transformer, saved in ``key_format``."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    transformer = cls.from_pretrained(model_folder / "transformer")
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False),
                            transformer)
    state = {k: (v * 0.5).contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    prefix = "transformer." if key_format == "diffusers" else "base_model.model."
    save_file({prefix + k: v for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-transformers")
    flux, sd3 = save_tiny_flux_pipeline(root / "flux"), save_tiny_sd3_pipeline(root / "sd3")
    return {"flux": flux, "sd3": sd3,
            "flux-a": save_transformer_lora(flux, "flux", root / "flux-a.safetensors", 1),
            "flux-b": save_transformer_lora(flux, "flux", root / "flux-b.safetensors", 5),
            "flux-peft": save_transformer_lora(flux, "flux", root / "flux-a-peft.safetensors", 1, "peft"),
            "sd3-a": save_transformer_lora(sd3, "sd3", root / "sd3-a.safetensors", 2),
            "sd3-b": save_transformer_lora(sd3, "sd3", root / "sd3-b.safetensors", 6),
            "sd3-peft": save_transformer_lora(sd3, "sd3", root / "sd3-a-peft.safetensors", 2, "peft")}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)  # every run really generates, on one shared cached model


def pixels(batch: ImageBatch) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in batch.images])


def lora_graph(family, model, loras=(), fuse=False):
    """``<family>.generate`` with a chain of diffusion.lora nodes: loras = [(path, strength)]."""
    builder = GraphBuilder(f"{family}-lora")
    stack = None
    for index, (path, strength) in enumerate(loras):
        inputs = {"path": str(path), "strength": strength, **({"stack": stack["loras"]} if stack else {})}
        if fuse and index == len(loras) - 1:
            inputs["fuse"] = True
        stack = builder.add("diffusion.lora", f"lora{index}", **inputs)
    encode = builder.add(f"encode.{family}", "enc", texts="a red circle", model=str(model))
    gen = builder.add(f"{family}.generate", "gen", conditioning=encode["conditioning"], model=str(model), steps=2,
                      seed=3, guidance=1.0, width=16, height=16,
                      **({"loras": stack["loras"]} if stack is not None else {}))
    builder.output("images", gen["images"])
    return builder.build()


def run(engine, family, files, loras=(), fuse=False):
    return pixels(engine.run(lora_graph(family, files[family], loras, fuse))["images"])


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_transformer_lora_changes_the_image_and_strength_zero_equals_the_base_model(engine, files, family):
    base = run(engine, family, files)
    full = run(engine, family, files, [(files[f"{family}-a"], 1.0)])
    zero = run(engine, family, files, [(files[f"{family}-a"], 0.0)])
    assert not np.array_equal(base, full)
    assert np.array_equal(base, zero)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_two_transformer_loras_do_not_leak_into_a_run_without_loras(engine, files, family):
    base = run(engine, family, files)
    stacked = run(engine, family, files, [(files[f"{family}-a"], 0.8), (files[f"{family}-b"], 0.6)])
    only_a = run(engine, family, files, [(files[f"{family}-a"], 0.8)])
    after = run(engine, family, files)
    assert not np.array_equal(stacked, base) and not np.array_equal(stacked, only_a)
    assert np.array_equal(after, base)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_raw_peft_transformer_loras_give_the_diffusers_format_images(engine, files, family):
    wanted = run(engine, family, files, [(files[f"{family}-a"], 1.0)])
    assert np.abs(wanted - run(engine, family, files, [(files[f"{family}-peft"], 1.0)])).max() <= 1


@pytest.mark.slow
def test_a_fused_transformer_stack_gives_the_unfused_images_and_is_unfused_after(engine, files):
    base = run(engine, "flux", files)
    stack = [(files["flux-a"], 0.7), (files["flux-b"], 0.5)]
    assert np.abs(run(engine, "flux", files, stack) - run(engine, "flux", files, stack, fuse=True)).max() <= 2
    assert np.array_equal(run(engine, "flux", files), base)


def test_changing_only_a_transformer_lora_strength_loads_nothing(engine, files, monkeypatch):
    from diffusers.loaders import FluxLoraLoaderMixin

    run(engine, "flux", files, [(files["flux-b"], 1.0)])
    loads = []
    original = FluxLoraLoaderMixin.lora_state_dict.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(FluxLoraLoaderMixin, "lora_state_dict", classmethod(counting))
    half = run(engine, "flux", files, [(files["flux-b"], 0.5)])
    full = run(engine, "flux", files, [(files["flux-b"], 1.0)])
    assert loads == [] and not np.array_equal(half, full)


def test_a_unet_lora_into_flux_and_a_flux_lora_into_a_unet_are_refused_at_validation(files, tmp_path):
    import torch
    from safetensors.torch import save_file

    unet_lora = tmp_path / "unet-lora.safetensors"
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 2048), f"{key}.lora_B.weight": torch.zeros(64, 4)}, unet_lora)
    [issue] = validate_graph(lora_graph("flux", files["flux"], [(unet_lora, 1.0)]), default_registry())
    assert issue.path == "nodes.gen.inputs.loras" and "'flux'" in issue.message
    builder = GraphBuilder("g")
    stack = builder.add("diffusion.lora", "lora", path=str(files["flux-a"]))
    builder.add("diffusion.generate", "gen", prompt="a red circle", model="tiny-shapes-diffusion", loras=stack["loras"])
    issues = validate_graph(builder.build(), default_registry())
    assert [i.path for i in issues] == ["nodes.gen.inputs.loras"] and "flux" in issues[0].message


def test_a_kohya_flux_lora_gives_the_images_of_the_same_lora_in_diffusers_format(engine, files, tmp_path):
    """Kohya (sd-scripts) Flux LoRAs name BFL blocks with fused q/k/v; diffusers' loader splits them."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(11)
    down, ups = 0.3 * torch.randn(4, 32), [0.3 * torch.randn(32, 4) for _ in range(3)]
    proj_down, proj_up = 0.3 * torch.randn(4, 32), 0.3 * torch.randn(32, 4)
    kohya = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": down,
             "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.cat(ups),
             "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0),
             "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": proj_down,
             "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": proj_up,
             "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.tensor(4.0)}
    block = "transformer.transformer_blocks.0.attn."
    diffusers = {f"{block}to_out.0.lora_A.weight": proj_down, f"{block}to_out.0.lora_B.weight": proj_up}
    for name, up in zip(("to_q", "to_k", "to_v"), ups):
        diffusers |= {f"{block}{name}.lora_A.weight": down.clone(), f"{block}{name}.lora_B.weight": up}
    save_file(kohya, tmp_path / "flux-kohya.safetensors")
    save_file(diffusers, tmp_path / "flux-diffusers.safetensors")
    assert validate_graph(lora_graph("flux", files["flux"], [(tmp_path / "flux-kohya.safetensors", 1.0)]),
                          default_registry()) == []
    base = run(engine, "flux", files)
    from_kohya = run(engine, "flux", files, [(tmp_path / "flux-kohya.safetensors", 1.0)])
    from_diffusers = run(engine, "flux", files, [(tmp_path / "flux-diffusers.safetensors", 1.0)])
    assert not np.array_equal(base, from_kohya)
    assert np.abs(from_kohya - from_diffusers).max() <= 1
