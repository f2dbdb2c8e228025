"""An LCM-LoRA in the ``speed`` recipe: merged into a copy of the UNet through the LoRA stack code,
sampled with the LCM scheduler in a few steps without guidance. A tiny UNet-only LoRA made with
peft on the tiny SD model stands in for ``lcm-lora-sdv1-5`` (it is no consistency model, so the
images only show that the weights and the sampling changed)."""

from __future__ import annotations

import numpy as np
import pytest
from test_lora import UNET_TARGETS, _peft_lora
from tiny_models import save_tiny_sd_pipeline

from sfumato import Engine, GraphBuilder, GraphValidationError


def save_unet_lora(model_folder, path, seed):
    """A LoRA for the tiny SD model's UNet only, in diffusers naming (as LCM-LoRA files are)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = _peft_lora(UNet2DConditionModel.from_pretrained(model_folder / "unet"), UNET_TARGETS, seed)
    save_file({f"unet.{key}": value for key, value in unet.items()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lcm")
    sd = save_tiny_sd_pipeline(root / "sd")
    return {"sd": sd, "lcm": save_unet_lora(sd, root / "lcm-lora.safetensors", 7)}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def graph(model, speed=None, steps=6, guidance=3.0):
    builder = GraphBuilder("lcm")
    extra = {"speed": speed} if speed is not None else {}
    gen = builder.add("diffusion.generate", "gen", model=str(model), prompt="a red circle", steps=steps,
                      guidance=guidance, seed=3, **extra)
    builder.output("images", gen["images"])
    return builder.build()


def pixels(engine, model, speed=None, **inputs) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in engine.run(graph(model, speed, **inputs))["images"].images])


@pytest.fixture
def loops(monkeypatch):
    """Each denoising loop's scheduler class, steps, guidance and UNet batch sizes."""
    from sfumato_diffusers import nodes

    seen = []
    original = nodes.sample_latents

    def recording(model, scheduler, request, progress):
        batches = []
        unet = model.unet

        class Counting:
            config = unet.config

            def __getattr__(self, name):
                return getattr(unet, name)

            def __call__(self, sample, *args, **kwargs):
                batches.append(len(sample))
                return unet(sample, *args, **kwargs)

        import dataclasses

        seen.append({"scheduler": type(scheduler).__name__, "steps": request.steps, "guidance": request.guidance,
                     "batches": batches})
        return original(dataclasses.replace(model, unet=Counting()), scheduler, request, progress)

    monkeypatch.setattr(nodes, "sample_latents", recording)
    return seen


def test_an_lcm_lora_samples_with_the_lcm_scheduler_in_four_steps_without_guidance(engine, files, loops):
    base = pixels(engine, files["sd"])
    fast = pixels(engine, files["sd"], {"lcm_lora": str(files["lcm"])})
    assert loops[0]["scheduler"] == "DPMSolverMultistepScheduler" and loops[0]["batches"] == [2] * 6
    assert loops[1] == {"scheduler": "LCMScheduler", "steps": 4, "guidance": 1.0, "batches": [1] * 4}
    assert not np.array_equal(fast, base)


def test_the_recipe_steps_and_guidance_override_the_lcm_lora_defaults(engine, files, loops):
    pixels(engine, files["sd"], {"lcm_lora": str(files["lcm"]), "steps": 2, "guidance": 1.5})
    assert loops[0] == {"scheduler": "LCMScheduler", "steps": 2, "guidance": 1.5, "batches": [2, 2]}


def _tiny_sd(folder):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sfumato_diffusers.loading import DiffusionModel

    return DiffusionModel("sd", UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet").eval(),
                          AutoencoderKL.from_pretrained(str(folder), subfolder="vae").eval(), {}, dtype=torch.float32)


def test_an_lcm_lora_is_merged_into_a_copy_as_the_lora_stack_applies_it(files):
    import torch

    from sfumato_diffusers.lora import lora, lora_applied
    from sfumato_diffusers.speed import SpeedRecipe, apply_levers

    model = _tiny_sd(files["sd"])
    sample, states = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 77, 32)
    with torch.no_grad():
        base = model.unet(sample, 10, encoder_hidden_states=states).sample
        merged_model = apply_levers(model, SpeedRecipe(lcm_lora=str(files["lcm"])))
        merged = merged_model.unet(sample, 10, encoder_hidden_states=states).sample
        assert torch.equal(model.unet(sample, 10, encoder_hidden_states=states).sample, base)  # loaded model untouched
        with lora_applied(model, lora(str(files["lcm"]))):
            stacked = model.unet(sample, 10, encoder_hidden_states=states).sample
    assert torch.allclose(merged, stacked, atol=1e-5) and not torch.allclose(merged, base, atol=1e-3)
    # Plain layers after merging (nothing runs a LoRA per step), and the copy may use the LCM scheduler.
    assert not any("lora" in name for name, _ in merged_model.unet.named_modules())
    assert merged_model.info.get("lcm") is True


def test_a_lora_stack_applies_on_top_of_an_lcm_lora_copy(engine, files):
    builder = GraphBuilder("lcm+lora")
    style = builder.add("diffusion.lora", "style", path=str(files["lcm"]), strength=0.5)
    gen = builder.add("diffusion.generate", "gen", model=str(files["sd"]), prompt="a red circle", seed=3,
                      loras=style["loras"], speed={"lcm_lora": str(files["lcm"])})
    builder.output("images", gen["images"])
    stacked = np.stack([np.asarray(i, dtype=np.int16) for i in engine.run(builder.build())["images"].images])
    assert not np.array_equal(stacked, pixels(engine, files["sd"], {"lcm_lora": str(files["lcm"])}))


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing.safetensors", "speed.lcm_lora: no file"),
    (lambda root: _not_a_lora(root / "weights.safetensors"), "holds no LoRA weights"),
])
def test_an_lcm_lora_that_is_missing_or_no_lora_is_a_validation_issue(engine, files, tmp_path, make, message):
    with pytest.raises(GraphValidationError, match="speed.lcm_lora") as caught:
        engine.run(graph(files["sd"], {"lcm_lora": str(make(tmp_path))}))
    assert message in str(caught.value)


def _not_a_lora(path):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, path)
    return path


def test_an_lcm_lora_with_step_caching_is_refused_naming_both(engine, files):
    with pytest.raises(GraphValidationError, match=r"speed\.step_cache=2 with speed\.lcm_lora"):
        engine.run(graph(files["sd"], {"lcm_lora": str(files["lcm"]), "step_cache": 2}))


@pytest.mark.slow
def test_an_lcm_lora_runs_on_the_openvino_backend_within_tolerance(engine, files, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SFUMATO_EXPORT_CACHE", str(tmp_path))
    torch_images = pixels(engine, files["sd"], {"lcm_lora": str(files["lcm"])})
    exported = pixels(engine, files["sd"], {"lcm_lora": str(files["lcm"]), "backend": "openvino"})
    assert np.abs(exported - torch_images).mean() <= 0.5
