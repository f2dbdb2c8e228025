"""Compositional scenes in the zoo's data, and the judge's GenEval-style categories."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sfumato_zoo.dataset import (
    CATEGORIES,
    SCENE_HELDOUT_TEMPLATES,
    SCENE_TRAIN_TEMPLATES,
    Scene,
    SceneObject,
    compositional_prompts,
    iter_scenes,
    render_scene,
)
from sfumato_zoo.judge import find_objects, scene_correct, score_scenes


def test_scenes_are_deterministic_per_seed():
    first = [np.asarray(s.image) for s in iter_scenes(3, 12)]
    again = [np.asarray(s.image) for s in iter_scenes(3, 12)]
    other = [np.asarray(s.image) for s in iter_scenes(4, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_scenes_hold_one_to_four_objects_at_64_pixels_on_every_background():
    samples = list(iter_scenes(5, 120))
    assert {s.image.size for s in samples} == {(64, 64)}
    assert {len(s.scene.objects) for s in samples} == {1, 2, 3, 4}
    assert {s.scene.background for s in samples} == {"black", "white", "gray"}
    assert {s.scene.category for s in samples} == set(CATEGORIES)


def test_captions_state_counts_relations_and_colours():
    captions = {s.scene.category: s.caption for s in iter_scenes(0, 6)}
    samples = list(iter_scenes(9, 120))
    counting = [s for s in samples if s.scene.category == "counting"]
    assert all(f" {s.scene.objects[0].colour} {s.scene.objects[0].shape}s " in f" {s.caption} " for s in counting)
    assert any(word in s.caption for s in counting for word in ("two", "three", "four"))
    position = [s for s in samples if s.scene.category == "position"]
    assert {s.scene.relation for s in position} == {"left of", "right of", "above", "below"}
    assert all(any(w in s.caption for w in ("to the left of", "to the right of", "above", "below")) for s in position)
    attr = next(s for s in samples if s.scene.category == "color_attr")
    a, b = attr.scene.objects
    assert f"{a.colour} {a.shape}" in attr.caption and f"{b.colour} {b.shape}" in attr.caption
    assert set(captions) == set(CATEGORIES)


def test_heldout_scene_wordings_never_appear_in_training():
    for category in CATEGORIES:
        assert not set(SCENE_TRAIN_TEMPLATES[category]) & set(SCENE_HELDOUT_TEMPLATES[category])
    train = {s.caption for s in iter_scenes(1, 300)}
    heldout = [p for p, _ in compositional_prompts(60)]
    assert not train & set(heldout)


def test_judge_finds_every_object_with_shape_colour_and_centre():
    for sample in iter_scenes(21, 60):
        background, found = find_objects(sample.image)
        assert background == sample.scene.background
        assert sorted((d.shape, d.colour) for d in found) == sorted((o.shape, o.colour) for o in sample.scene.objects)
        for obj in sample.scene.objects:
            # A triangle's centre of mass sits a third of its half-height below its box centre.
            assert min(abs(d.cx - obj.cx) + abs(d.cy - obj.cy) for d in found) < 1.5 + obj.half / 3


def test_ground_truth_scenes_score_one_in_every_category():
    samples = list(iter_scenes(7, 240))
    scores = score_scenes([s.image for s in samples], [s.scene for s in samples])
    assert set(scores) == {*CATEGORIES, "overall", "n"}
    assert all(scores[c] == 1.0 for c in (*CATEGORIES, "overall"))


def _scene(category: str, *objects: tuple[str, str, float, float], relation: str | None = None) -> Scene:
    return Scene(tuple(SceneObject(shape, colour, cx, cy, 8.0) for shape, colour, cx, cy in objects),
                 "black", category, 64, relation)


@pytest.mark.parametrize("category", ["position", "color_attr", "counting", "two_object", "colors"])
def test_wrong_scenes_are_judged_wrong(category):
    if category == "position":
        wanted = _scene("position", ("circle", "red", 16, 32), ("square", "blue", 48, 32), relation="left of")
        drawn = _scene("position", ("circle", "red", 48, 32), ("square", "blue", 16, 32), relation="right of")
    elif category == "color_attr":  # colours swapped between the shapes
        wanted = _scene("color_attr", ("circle", "red", 16, 32), ("square", "blue", 48, 32))
        drawn = _scene("color_attr", ("circle", "blue", 16, 32), ("square", "red", 48, 32))
    elif category == "counting":  # one too many
        wanted = _scene("counting", *[("triangle", "green", x, 32) for x in (12, 32)])
        drawn = _scene("counting", *[("triangle", "green", x, 32) for x in (12, 32, 52)])
    elif category == "two_object":  # the square is missing
        wanted = _scene("two_object", ("circle", "red", 16, 32), ("square", "blue", 48, 32))
        drawn = _scene("two_object", ("circle", "red", 16, 32))
    else:
        wanted = _scene("colors", ("circle", "yellow", 32, 32))
        drawn = _scene("colors", ("circle", "purple", 32, 32))
    image = render_scene(drawn)
    assert scene_correct(find_objects(image)[1], drawn)
    assert not scene_correct(find_objects(image)[1], wanted)
    assert score_scenes([image], [wanted])[category] == 0.0


def test_an_empty_image_passes_no_category():
    samples = list(iter_scenes(2, 6))
    empty = render_scene(dataclasses.replace(samples[0].scene, objects=()))
    assert score_scenes([empty] * 6, [s.scene for s in samples])["overall"] == 0.0


def test_compositional_eval_refuses_unknown_graphs_with_exit_code_2(capsys):
    from sfumato.cli import main

    assert main(["zoo", "eval", "tiny-shapes-diffusion", "--suite", "compositional", "--graphs", "fancy"]) == 2
    assert "--graphs" in capsys.readouterr().err


@pytest.mark.slow
def test_compositional_eval_scores_both_graphs_per_category(tmp_path):
    from sfumato import Engine
    from sfumato_zoo.evaluation import evaluate_compositional

    scores = evaluate_compositional(n=6, steps=2, engine=Engine(device="cpu", cache=False, output_dir=tmp_path))
    for graph in ("plain", "compose"):
        assert set(scores[graph]) >= {*CATEGORIES, "overall", "seconds_per_image"}
        assert all(0.0 <= scores[graph][c] <= 1.0 for c in CATEGORIES)
        assert scores[graph]["n"] == 6
    assert scores["compose"]["planning_seconds_per_image"] > 0


def test_zoo_layouts_writes_one_prompt_and_layout_a_line(tmp_path, capsys):
    import json

    from sfumato.cli import main

    out = tmp_path / "pairs.jsonl"
    assert main(["zoo", "layouts", "--out", str(out), "--n", "12", "--heldout", "--seed", "1234"]) == 0
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(items) == 12 and [item["prompt"] for item in items] == [p for p, _ in compositional_prompts(12)]
    assert all(set(item["layout"]) == {"background", "objects"} for item in items)
