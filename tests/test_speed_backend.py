"""The OpenVINO CPU backend of the ``speed`` recipe: fidelity, the on-disk export cache, refusals.

Tolerance: at float32 inference precision the images stay within ``EXACT`` (mean |difference|
in 0..255 levels) of PyTorch's; at bfloat16 within the ``TOLERANCE`` every approximating lever
has in test_speed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import save_tiny_zoo_diffusion

from sfumato import Engine, GraphBuilder, GraphValidationError

TOLERANCE = 4.0
EXACT = 0.5
STEPS = 4

needs_openvino = pytest.mark.skipif(__import__("importlib.util").util.find_spec("openvino") is None,
                                    reason="the cpu extra (openvino) is not installed")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return save_tiny_zoo_diffusion(tmp_path_factory.mktemp("backend") / "zoo")


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SFUMATO_EXPORT_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def engine(export_cache):
    return Engine(device="cpu", cache=False)


def graph(zoo, speed=None):
    builder = GraphBuilder("backend")
    encode = builder.add("encode.text", "enc", texts=["a red circle", "a blue square"])
    extra = {"speed": speed} if speed is not None else {}
    gen = builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=str(zoo), steps=STEPS,
                      **extra)
    builder.output("images", gen["images"])
    return builder.build()


def generate(engine, zoo, speed=None) -> np.ndarray:
    images = engine.run(graph(zoo, speed)).outputs["images"].images
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


@pytest.fixture(scope="module")
def baseline(engine, zoo):
    return generate(engine, zoo)


@needs_openvino
@pytest.mark.parametrize("speed, tolerance", [({"backend": "openvino"}, EXACT),
                                              ({"backend": "openvino", "dtype": "bfloat16"}, TOLERANCE)])
def test_openvino_backend_stays_within_tolerance_of_pytorch(engine, zoo, baseline, export_cache, speed, tolerance):
    difference = np.abs(generate(engine, zoo, speed) - baseline).mean()
    assert difference <= tolerance, (speed, difference)
    # ...and it really ran converted models: the UNet's and the decoder's files are in the cache.
    kinds = sorted(path.name.split("-")[0] for path in (export_cache / next(export_cache.iterdir())).iterdir())
    assert kinds == ["unet+class_labels", "vae"]


@needs_openvino
def test_bfloat16_precision_changes_the_backend_output(engine, zoo, baseline):
    # The tolerance test would pass if the dtype were ignored; this one would not.
    exact = generate(engine, zoo, {"backend": "openvino"})
    assert np.abs(generate(engine, zoo, {"backend": "openvino", "dtype": "bfloat16"}) - exact).mean() > 0


@needs_openvino
@pytest.mark.slow
def test_a_second_engine_and_a_second_process_load_the_converted_models_instead_of_converting(zoo, tmp_path):
    from sfumato_diffusers import cpu_backend

    cache = tmp_path / "exported"
    script = (
        "import json, sys; from sfumato import Engine, Graph; from sfumato_diffusers import cpu_backend\n"
        "Engine(device='cpu', cache=False).run(Graph.from_dict(json.loads(sys.argv[1])))\n"
        "print(cpu_backend.EXPORTS['count'])\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SFUMATO_EXPORT_CACHE", str(cache))
        before = cpu_backend.EXPORTS["count"]
        Engine(device="cpu", cache=False).run(graph(zoo, {"backend": "openvino"}))
        assert cpu_backend.EXPORTS["count"] - before == 2  # the UNet and the VAE decoder, once each
        Engine(device="cpu", cache=False).run(graph(zoo, {"backend": "openvino"}))
        assert cpu_backend.EXPORTS["count"] - before == 2  # a new model copy finds them on disk
        files = sorted(p.name for p in cache.rglob("*"))
        second = subprocess.run([sys.executable, "-c", script, json.dumps(graph(zoo, {"backend": "openvino"}).to_dict())],
                                capture_output=True, text=True, env={**os.environ, "SFUMATO_EXPORT_CACHE": str(cache)},
                                check=True)
    assert second.stdout.split()[-1] == "0"
    assert sorted(p.name for p in cache.rglob("*")) == files


def _module(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())


@needs_openvino
def test_the_export_cache_is_keyed_by_the_weights_the_shapes_and_the_openvino_version(export_cache):
    import openvino
    import torch

    from sfumato_diffusers.cpu_backend import ExportedModule

    def path(module, *shape):
        return ExportedModule(module, "test", "f32").path_for([torch.zeros(shape).numpy()])

    first = path(_module(0), 2, 4)
    assert path(_module(0), 2, 4) == first  # the same weights in another object
    assert path(_module(1), 2, 4) != first  # other weights
    assert path(_module(0), 1, 4) != first  # another static shape
    assert first.is_relative_to(export_cache) and openvino.get_version().split("-")[0] in str(first)


@needs_openvino
def test_a_converted_module_gives_pytorchs_output(export_cache):
    import torch

    from sfumato_diffusers.cpu_backend import ExportedModule

    module = _module(3).eval()
    inputs = torch.randn(2, 4)
    with torch.no_grad():
        expected = module(inputs)
    assert torch.allclose(ExportedModule(module, "test", "f32").run(inputs), expected, atol=1e-5)


@pytest.mark.parametrize("lever", [{"step_cache": 2}, {"compile": True}, {"quantize": "int8_dynamic"},
                                   {"token_merging": 0.5}, {"channels_last": True}])
def test_levers_the_backend_cannot_honour_are_refused_at_validation_naming_both(engine, zoo, lever):
    [name] = lever
    with pytest.raises(GraphValidationError, match=rf"speed\.backend='openvino' with speed\.{name}"):
        engine.run(graph(zoo, {"backend": "openvino", **lever}))


def test_the_backend_on_a_gpu_is_refused_naming_the_lever_and_the_device():
    from sfumato_diffusers.speed import SpeedRecipe, recipe_conflicts

    [problem] = recipe_conflicts(SpeedRecipe(backend="openvino"), "cuda:0")
    assert "speed.backend='openvino' with device 'cuda'" in problem
    assert recipe_conflicts(SpeedRecipe(backend="openvino"), "cpu") == []


def test_a_missing_openvino_is_a_validation_issue_naming_the_lever_and_the_extra(engine, zoo, monkeypatch):
    from sfumato import Requirement

    monkeypatch.setattr(Requirement, "is_installed", lambda self: False)
    with pytest.raises(GraphValidationError) as caught:
        engine.run(graph(zoo, {"backend": "openvino"}))
    message = str(caught.value)
    assert "speed.backend='openvino'" in message and "pip install 'sfumato[cpu]'" in message


def test_the_backend_with_loras_is_refused_naming_both():
    from sfumato_diffusers.lora import LoraEntry, LoraStack
    from sfumato_diffusers.speed import prepare

    stack = LoraStack((LoraEntry("style.safetensors", "0" * 64, "diffusers"),))
    with pytest.raises(ValueError, match=r"speed\.backend='openvino' with loras"):
        prepare(None, None, {"backend": "openvino"}, "dpm++", 4, stack)


def test_the_exported_unet_refuses_controlnet_residuals_naming_both(zoo):
    import torch
    from diffusers import UNet2DConditionModel

    from sfumato_diffusers.cpu_backend import ExportedUNet

    unet = ExportedUNet(UNet2DConditionModel.from_pretrained(str(zoo), subfolder="unet"), "f32")
    with pytest.raises(ValueError, match=r"speed\.backend='openvino' with control"):
        unet(torch.zeros(1, 4, 8, 8), 1, encoder_hidden_states=torch.zeros(1, 1, 384),
             down_block_additional_residuals=[torch.zeros(1)])


def test_the_cpu_extra_is_declared_and_installed_by_the_test_extra():
    import tomllib

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(dependency.startswith("openvino") for dependency in extras["cpu"])
    assert any(dependency.startswith("openvino") for dependency in extras["test"])  # CI runs these tests


def test_tune_skips_the_backend_when_its_package_is_missing(zoo, tmp_path, capsys, monkeypatch):
    from test_speed import _graph_with_speed_param

    from sfumato import Requirement
    from sfumato.cli import main

    monkeypatch.setattr(Requirement, "is_installed", lambda self: False)
    graph_file, candidates = tmp_path / "graph.json", tmp_path / "candidates.json"
    graph_file.write_text(json.dumps(_graph_with_speed_param(zoo)))
    candidates.write_text(json.dumps([{"backend": "openvino"}]))
    assert main(["tune", str(graph_file), "--candidates", str(candidates), "--out", str(tmp_path / "tuned")]) == 0
    assert "skipped (speed.backend='openvino'" in capsys.readouterr().out
    assert [row["recipe"] for row in json.loads((tmp_path / "tuned" / "tune.json").read_text())["rows"]] == [{}]
