"""The model zoo: dataset, judge, training, and the shipped models' prompt fidelity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfumato_zoo import WEIGHTS
from sfumato_zoo.dataset import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, all_specs, evaluation_prompts, iter_samples
from sfumato_zoo.judge import judge_image, score_batch
from sfumato_zoo.prompts import expected_attributes


def test_dataset_is_deterministic_per_seed():
    first = [np.asarray(s.image) for s in iter_samples(3, 20)]
    again = [np.asarray(s.image) for s in iter_samples(3, 20)]
    other = [np.asarray(s.image) for s in iter_samples(4, 20)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_captions_match_their_images_by_the_judge():
    samples = list(iter_samples(11, 300))
    assert score_batch([s.image for s in samples], [s.spec for s in samples])["all"] == 1.0
    assert all(expected_attributes(s.caption) == s.spec.as_dict() for s in samples)


@pytest.mark.parametrize("size", [32, 64])
def test_judge_is_at_least_99_percent_right_on_real_images(size):
    samples = list(iter_samples(2024, 1000, size=size))
    assert score_batch([s.image for s in samples], [s.spec for s in samples])["all"] >= 0.99


def test_held_out_templates_never_appear_in_training():
    assert not set(HELDOUT_TEMPLATES) & set(TRAIN_TEMPLATES)
    train_captions = {s.caption for s in iter_samples(0, 2000)}
    assert not {p for p, _ in evaluation_prompts(96)} & train_captions


def test_evaluation_prompts_cover_every_combination():
    specs = {spec for _, spec in evaluation_prompts(96)}
    assert specs == set(all_specs())


def test_judge_reports_none_for_a_blank_image():
    from PIL import Image

    verdict = judge_image(Image.new("RGB", (32, 32), (128, 128, 128)))
    assert (verdict.shape, verdict.background) == ("none", "gray")


@pytest.fixture(scope="module")
def encode():
    from sfumato import Engine, GraphBuilder

    engine = Engine(device="cpu")

    def run(texts):
        builder = GraphBuilder("captions")
        node = builder.add("encode.sentence", texts=texts)
        builder.output("e", node["embedding"])
        return engine.run(builder.build())["e"].vectors

    return run


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["diffusion", "vae", "gan"])
def test_short_training_lowers_loss_and_writes_loadable_safetensors(kind, tmp_path, encode):
    from sfumato_zoo.training import Budget, train

    steps = {"diffusion": 160, "vae": 60, "gan": 60}[kind]
    record = train(kind, tmp_path / kind, Budget(steps=steps), seed=0, encode=encode, pool=256, batch=16,
                   log_every=10)
    stage = record["unet" if kind == "diffusion" else kind]
    assert stage["last_loss"] < stage["first_loss"]
    assert json.loads((tmp_path / kind / "sfumato.json").read_text())["family"] == kind
    # Interrupting and resuming continues from the checkpoint rather than starting over.
    resumed = train(kind, tmp_path / kind, Budget(steps=steps + 10), seed=0, encode=encode, pool=256, batch=16,
                    log_every=10)
    assert resumed["unet" if kind == "diffusion" else kind]["steps"] == (steps + 10 if kind != "diffusion"
                                                                         else int((steps + 10) * 0.75))
    from sfumato import Engine
    from sfumato_zoo.evaluation import generation_graph

    images = Engine(device="cpu").run(generation_graph(str(tmp_path / kind), ["a red circle"], steps=2))["images"]
    assert images.images[0].size == (32, 32)
    assert not list((tmp_path / kind).rglob("*.pkl")) and not list((tmp_path / kind).rglob("*.bin"))


#: The fidelity goals (all attributes right on 96 held-out prompts) minus a margin of 0.03
#: for floating-point differences between machines.
GOALS = {("tiny-shapes-diffusion", 20, "dpm++"): 0.87, ("tiny-shapes-diffusion", 8, "dpm++"): 0.77,
         ("tiny-shapes-vae", 1, "dpm++"): 0.82, ("tiny-shapes-gan", 1, "dpm++"): 0.67}


@pytest.mark.slow
@pytest.mark.parametrize("model, steps, scheduler", list(GOALS))
def test_shipped_models_reach_their_fidelity_goals(model, steps, scheduler):
    if not (WEIGHTS / model).exists():
        pytest.fail(f"{model} weights are missing from {WEIGHTS}")
    from sfumato_zoo.evaluation import evaluate

    scores = evaluate(model, n=96, steps=steps, scheduler=scheduler)
    assert scores["all"] >= GOALS[(model, steps, scheduler)], scores


@pytest.mark.slow
def test_zoo_eval_sends_progress_from_loading_to_the_last_sampler_step(tmp_path):
    from sfumato_zoo.cli import EvalProgress
    from sfumato_zoo.evaluation import evaluate
    from tiny_models import save_tiny_zoo_diffusion

    events = []
    display = EvalProgress("tiny", 4)
    scores = evaluate(str(save_tiny_zoo_diffusion(tmp_path / "model")), n=4, steps=3,
                      observers=[events.append, display])
    assert scores["n"] == 4
    kinds = [event.kind for event in events]
    assert kinds.count("run_started") == 2 and "model_loaded" in kinds
    steps = [(event.current, event.total) for event in events if event.kind == "node_progress"]
    assert steps[-3:] == [(1, 3), (2, 3), (3, 3)]
    task = display.progress.tasks[0]
    assert task.completed == 3 and task.total == 3 and "4 images" in task.description
