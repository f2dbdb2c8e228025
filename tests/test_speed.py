"""The ``speed`` recipe on the generation nodes: each lever, its fidelity, and the refused combinations.

Tolerance: on the tiny random models, a lever that approximates (bfloat16, int8,
step caching) keeps the mean absolute pixel difference to the float32 image at
most ``TOLERANCE`` levels of 255; exact levers (layout, SDPA, fused QKV) keep it
at most 0.5 (rounding).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import save_tiny_zoo_diffusion

from sfumato import Engine, GraphBuilder, GraphValidationError, NodeExecutionError, read_png_metadata
from sfumato.cli import main

TOLERANCE = 4.0  # mean |difference| in 0..255 levels
STEPS = 6


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return save_tiny_zoo_diffusion(tmp_path_factory.mktemp("speed") / "zoo")


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def generate(engine, zoo, speed=None, node="generate.image", **inputs) -> np.ndarray:
    builder = GraphBuilder("speed")
    encode = builder.add("encode.text", "enc", texts=["a red circle", "a blue square"])
    extra = {"speed": speed} if speed is not None else {}
    gen = builder.add(node, "gen", conditioning=encode["conditioning"], model=str(zoo),
                      **{"steps": STEPS, **inputs, **extra})
    builder.output("images", gen["images"])
    images = engine.run(builder.build()).outputs["images"].images
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


@pytest.fixture(scope="module")
def baseline(engine, zoo):
    return generate(engine, zoo)


@pytest.mark.parametrize("speed, tolerance", [
    ({"dtype": "bfloat16"}, TOLERANCE),
    ({"channels_last": True}, 0.5),
    ({"attention": "sdpa"}, 0.5),
    ({"fuse_qkv": True}, 0.5),
    ({"quantize": "int8_dynamic"}, TOLERANCE),
    ({"quantize": "int8_weight_only"}, TOLERANCE),
    ({"step_cache": 2}, TOLERANCE),
    ({"token_merging": 0.5}, 0.5),
    ({"dtype": "bfloat16", "channels_last": True, "step_cache": 2}, TOLERANCE),
])
def test_each_lever_stays_within_tolerance_of_the_float32_baseline(engine, zoo, baseline, speed, tolerance):
    if "quantize" in speed:
        pytest.importorskip("torchao")
    if "token_merging" in speed:
        pytest.importorskip("tomesd")
    difference = np.abs(generate(engine, zoo, speed) - baseline).mean()
    assert difference <= tolerance, (speed, difference)


def test_the_diffusion_node_takes_the_recipe_too(engine, zoo, baseline):
    images = generate(engine, zoo, {"step_cache": 2}, node="diffusion.generate")
    assert np.abs(images - baseline).mean() <= TOLERANCE


def test_an_approximating_lever_changes_the_image(engine, zoo, baseline):
    # The tolerance tests would pass if the recipe were ignored; this one would not.
    assert np.abs(generate(engine, zoo, {"step_cache": 3}) - baseline).mean() > 0


def test_quantized_weights_are_smaller_in_bytes(zoo):
    pytest.importorskip("torchao")
    from diffusers import UNet2DConditionModel

    from sfumato_diffusers.speed import quantize_linear_layers, weight_bytes

    unet = UNet2DConditionModel.from_pretrained(str(zoo), subfolder="unet")
    before = weight_bytes(unet)
    quantize_linear_layers(unet, "int8_weight_only")
    assert weight_bytes(unet) < 0.8 * before


def test_step_caching_makes_fewer_full_unet_calls(engine, zoo, monkeypatch):
    from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn

    calls = []
    original = UNetMidBlock2DCrossAttn.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(UNetMidBlock2DCrossAttn, "forward", counted)
    generate(engine, zoo)
    full = len(calls)
    calls.clear()
    generate(engine, zoo, {"step_cache": 3})
    assert full == STEPS  # one UNet call per step (guidance batched)
    assert len(calls) == STEPS // 3


def test_step_cache_counts_full_and_shallow_calls(zoo):
    import torch
    from diffusers import UNet2DConditionModel

    from sfumato_diffusers.speed import StepCachedUNet

    unet = UNet2DConditionModel.from_pretrained(str(zoo), subfolder="unet").eval()
    cached = StepCachedUNet(unet, interval=2)
    sample, states, pooled = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 384), torch.randn(1, 384)
    with torch.inference_mode():
        first = [cached(sample, t, encoder_hidden_states=states, class_labels=pooled).sample for t in (900, 800, 700)]
        plain = unet(sample, 700, encoder_hidden_states=states, class_labels=pooled).sample
    assert (cached.full_calls, cached.shallow_calls) == (2, 1)
    assert torch.equal(first[2], plain)  # a full call is the UNet itself
    assert not hasattr(unet.mid_block, "forward") or "forward" not in vars(unet.mid_block)  # stubs removed


def test_few_step_sampler_uses_the_recipe_steps(engine, zoo, monkeypatch):
    from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn

    calls = []
    original = UNetMidBlock2DCrossAttn.forward
    monkeypatch.setattr(UNetMidBlock2DCrossAttn, "forward",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    images = generate(engine, zoo, {"sampler": "tcd", "steps": 2})
    assert len(calls) == 2 and images.shape[0] == 2


def test_lcm_sampler_is_refused_for_a_model_that_is_not_distilled(engine, zoo):
    with pytest.raises(NodeExecutionError, match="latent-consistency"):
        generate(engine, zoo, {"sampler": "lcm", "steps": 4})


@pytest.mark.parametrize("speed, levers", [
    ({"compile": True, "token_merging": 0.5}, ("speed.compile", "speed.token_merging")),
    ({"step_cache": 2, "sampler": "tcd"}, ("speed.step_cache", "speed.sampler")),
])
def test_combinations_that_never_work_are_refused_at_validation_naming_both_levers(engine, zoo, speed, levers):
    with pytest.raises(GraphValidationError) as caught:
        generate(engine, zoo, speed)
    message = str(caught.value)
    assert all(lever in message for lever in levers) and "gen" in message


def test_float16_on_cpu_is_refused_naming_the_lever_and_the_device(engine, zoo):
    with pytest.raises(NodeExecutionError, match=r"speed\.dtype='float16' with device 'cpu'"):
        generate(engine, zoo, {"dtype": "float16"})


def test_an_unknown_lever_is_refused_naming_it(engine, zoo):
    with pytest.raises(GraphValidationError, match="warp_drive"):
        generate(engine, zoo, {"warp_drive": True})


def test_the_recipe_is_part_of_the_cache_signature(zoo):
    engine = Engine(device="cpu")
    first = generate(engine, zoo)
    assert np.array_equal(generate(engine, zoo), first)
    assert not np.array_equal(generate(engine, zoo, {"step_cache": 3}), first)


def _graph_with_speed_param(zoo) -> dict:
    return {
        "version": 1, "name": "speedy",
        "params": {"speed": {"type": "json", "default": {}, "description": "acceleration levers"}},
        "nodes": {
            "enc": {"type": "encode.text", "inputs": {"texts": ["a red circle"]}},
            "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"},
                                                         "model": str(zoo), "steps": 3, "batch_size": 1,
                                                         "speed": {"param": "speed"}}},
            "save": {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}},
        },
    }


def test_a_recipe_file_is_set_from_the_command_line_and_kept_in_the_png(zoo, tmp_path, capsys):
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph_with_speed_param(zoo)))
    recipe = {"dtype": "bfloat16", "step_cache": 2}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    out = tmp_path / "out"
    assert main(["run", str(graph), "--out", str(out), "--no-cache", "--json", "--device", "cpu",
                 "--set", f"speed=@{tmp_path / 'recipe.json'}"]) == 0
    [path] = json.loads(capsys.readouterr().out)["files"]
    assert read_png_metadata(path)["params"]["speed"] == recipe


def test_a_missing_recipe_file_exits_2_naming_it(zoo, tmp_path, capsys):
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph_with_speed_param(zoo)))
    assert main(["run", str(graph), "--out", str(tmp_path), "--set", f"speed=@{tmp_path / 'nope.json'}"]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_float8_on_cpu_is_refused_naming_the_lever_and_the_device(engine, zoo):
    with pytest.raises(NodeExecutionError, match=r"speed\.quantize='float8_dynamic' with device 'cpu'"):
        generate(engine, zoo, {"dtype": "bfloat16", "quantize": "float8_dynamic"})


def test_a_recipe_with_no_lever_set_is_no_recipe():
    from sfumato_diffusers.speed import as_recipe

    assert as_recipe({}) is None and as_recipe(None) is None
    assert as_recipe({"step_cache": 2}).key() == '{"step_cache":2}'


def _tiny_model(zoo):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sfumato_diffusers.loading import DiffusionModel

    return DiffusionModel("zoo", UNet2DConditionModel.from_pretrained(str(zoo), subfolder="unet").eval(),
                          AutoencoderKL.from_pretrained(str(zoo), subfolder="vae").eval(), {}, dtype=torch.float32)


def test_token_merging_patches_the_attention_blocks_of_a_copy(zoo):
    pytest.importorskip("tomesd")
    from sfumato_diffusers.speed import SpeedRecipe, apply_levers

    model = _tiny_model(zoo)
    merged = apply_levers(model, SpeedRecipe(token_merging=0.5))
    assert any(type(m).__name__ == "ToMeBlock" for m in merged.unet.modules())
    assert not any(type(m).__name__ == "ToMeBlock" for m in model.unet.modules())  # the loaded model is untouched


def test_module_levers_apply_to_a_copy_and_loop_levers_share_the_modules(zoo):
    import torch

    from sfumato_diffusers.speed import SpeedRecipe, apply_levers

    model = _tiny_model(zoo)
    fast = apply_levers(model, SpeedRecipe(dtype="bfloat16"))
    assert fast.unet.dtype == torch.bfloat16 and model.unet.dtype == torch.float32 and fast.dtype == torch.bfloat16
    assert apply_levers(model, SpeedRecipe(step_cache=2)).unet is model.unet


@pytest.mark.slow
def test_tune_keeps_faithful_recipes_and_its_recipe_reproduces_the_measured_fidelity(zoo, tmp_path, capsys):
    from sfumato import Engine, Graph
    from sfumato_diffusers.tune import fidelity

    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph_with_speed_param(zoo)))
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps([{"step_cache": 3}, {"dtype": "float16"}, {"channels_last": True}]))
    out = tmp_path / "tuned"
    assert main(["tune", str(graph), "--candidates", str(candidates), "--out", str(out), "--min-fidelity", "0.5",
                 "--budget", "5m"]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "float16" in printed  # refused on cpu, never run
    rows = json.loads((out / "tune.json").read_text())["rows"]
    assert [row["recipe"] for row in rows] == [{}, {"step_cache": 3}, {"channels_last": True}]
    assert (out / "pareto.md").read_text().startswith("| recipe |")
    recipe = json.loads((out / "recipe.json").read_text())
    measured = next(row["fidelity"] for row in rows if row["recipe"] == recipe)
    engine = Engine(device="cpu", cache=False, output_dir=tmp_path / "images")
    reference = engine.run(Graph.load(graph))
    again = engine.run(Graph.load(graph), {"speed": recipe})
    assert fidelity(again, reference) == pytest.approx(measured, abs=1e-9)


def test_tune_refuses_a_bad_budget_with_exit_2(zoo, tmp_path, capsys):
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph_with_speed_param(zoo)))
    assert main(["tune", str(graph), "--budget", "soon", "--out", str(tmp_path / "t")]) == 2
    assert "--budget" in capsys.readouterr().err


def test_tune_reads_a_judge_fidelity_output_by_its_all_accuracy():
    from types import SimpleNamespace

    from sfumato_diffusers.tune import fidelity

    reference = SimpleNamespace(outputs={"fidelity": {"all": 0.8, "colour": 1.0, "count": 4}})
    assert fidelity(SimpleNamespace(outputs={"fidelity": {"all": 0.6, "colour": 1.0, "count": 4}}),
                    reference) == pytest.approx(0.75)
    assert fidelity(SimpleNamespace(outputs={"fidelity": [0.9, 0.9]}),
                    SimpleNamespace(outputs={"fidelity": [0.6, 0.6]})) == 1.0  # capped: better than the reference


@pytest.mark.slow
@pytest.mark.parametrize("speed", [{"compile": True}, {"compile": True, "step_cache": 2}])
def test_compiled_blocks_stay_within_tolerance_and_combine_with_step_caching(engine, zoo, baseline, speed):
    # Regional compilation: step caching only stops calling the deep blocks, so the compiled
    # blocks never see a new graph (unlike a compiled whole UNet, ComfyUI#14795).
    assert np.abs(generate(engine, zoo, speed) - baseline).mean() <= TOLERANCE
