"""sfumato_layout: planning layouts from prompts, drawing them, and regional generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import save_tiny_sd_pipeline

import sfumato
import sfumato.testing as st
import sfumato_layout
from sfumato_layout import Layout, LayoutObject
from sfumato_layout import nodes as layout_nodes
from sfumato_layout.grammar import parse, plan
from sfumato_layout.regional import latent_windows
from sfumato_zoo.dataset import compositional_prompts, iter_scenes


def _boxes_overlap(a: LayoutObject, b: LayoutObject) -> bool:
    return not (a.box[2] <= b.box[0] or b.box[2] <= a.box[0] or a.box[3] <= b.box[1] or b.box[3] <= a.box[1])


def test_grammar_reads_counts_colours_relation_and_background():
    parsed = parse("two red circles to the left of a blue square on a black background")
    assert [(p.count, p.colour, p.noun) for p in parsed.phrases] == [(2, "red", "circle"), (1, "blue", "square")]
    assert parsed.relation is None or parsed.relation == "left of"
    assert parsed.background == "black"
    single = parse("there is a white square above a purple triangle and the background is gray")
    assert single.relation == "above" and single.background == "gray"
    assert [(p.colour, p.noun) for p in single.phrases] == [("white", "square"), ("purple", "triangle")]


@pytest.mark.parametrize("heldout", [False, True])
def test_grammar_parses_every_scene_caption_exactly(heldout):
    samples = [(p, s) for p, s in compositional_prompts(120)] if heldout else \
        [(s.caption, s.scene) for s in iter_scenes(0, 240)]
    for caption, scene in samples:
        parsed = parse(caption)
        named = scene.named_colours or scene.category == "counting"
        wanted = [(o.colour if named else "", o.shape) for o in scene.objects]
        assert [(p.colour, p.noun) for p in parsed.phrases for _ in range(p.count)] == wanted, caption
        assert parsed.background == scene.background, caption
        assert parsed.relation == scene.relation, caption


@pytest.mark.parametrize("relation,axis,sign", [("to the left of", 0, -1), ("to the right of", 0, 1),
                                                 ("above", 1, -1), ("below", 1, 1)])
def test_a_relation_places_the_first_object_on_its_side(relation, axis, sign):
    layout = plan(f"a red circle {relation} a blue square")
    first, second = layout.objects
    assert [o.caption for o in layout.objects] == ["red circle", "blue square"]
    assert sign * (first.centre[axis] - second.centre[axis]) > 0.3


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6])
def test_counted_objects_get_separate_boxes(count):
    words = {1: "a", 2: "two", 3: "three", 4: "four", 6: "six"}
    layout = plan(f"{words[count]} green triangles on white")
    assert len(layout) == count and layout.background == "white" and layout.planner == "grammar"
    assert not any(_boxes_overlap(a, b) for i, a in enumerate(layout.objects) for b in layout.objects[i + 1:])


def test_a_prompt_without_objects_is_refused_naming_the_node_and_the_known_nouns(tmp_path):
    builder = sfumato.GraphBuilder("plan")
    builder.output("layout", builder.add("layout.plan", "plan", prompt="something lovely")["layout"])
    with pytest.raises(sfumato.NodeExecutionError) as caught:
        sfumato.Engine(device="cpu", cache=False, output_dir=tmp_path).run(builder.build())
    assert caught.value.node_id == "plan" and caught.value.node_type == "layout.plan"
    assert "prompt: no object found" in str(caught.value.original) and "circle" in str(caught.value.original)


def test_plan_node_returns_a_layout_with_the_default_background():
    layout = st.call_node(layout_nodes.plan, prompt="a red circle", background="gray")["layout"]
    assert isinstance(layout, Layout) and layout.background == "gray" and layout.prompt == "a red circle"


def test_layout_round_trips_through_json_and_bad_boxes_are_refused():
    layout = plan("a red circle and a blue square on black")
    again = Layout.from_dict(json.loads(json.dumps(layout.as_dict())))
    assert again.as_dict() == layout.as_dict()
    with pytest.raises(ValueError, match="box"):
        Layout.from_dict({"objects": [{"caption": "x", "box": [0.5, 0.5, 0.2, 0.9]}]})
    with pytest.raises(ValueError, match="four numbers"):
        Layout.from_dict({"objects": [{"caption": "x", "box": [0.1, 0.2]}]})


def test_layout_port_type_is_registered_by_the_plugin():
    registry = st.plugin_registry(sfumato_layout)
    assert registry.ports.get("Layout").python_type is Layout
    assert registry.ports.name_for_annotation(Layout) == "Layout"
    assert {"layout.plan", "layout.prompts", "layout.draw", "layout.generate"} <= set(registry.nodes)


def test_region_prompts_put_the_background_first():
    layout = plan("two red circles on black")
    texts = st.call_node(layout_nodes.region_prompts, layout=layout)["texts"]
    assert texts == ["a plain black background", "a red circle on a black background",
                     "a red circle on a black background"]


def test_draw_outlines_each_box_in_its_colour():
    layout = plan("a red circle to the left of a blue square on a black background")
    image = st.call_node(layout_nodes.draw, layout=layout, width=100, height=100)["images"].images[0]
    pixels = np.asarray(image)
    assert tuple(pixels[50, 50]) == (12, 12, 12)  # background between the boxes
    red_box, blue_box = layout.objects
    assert tuple(pixels[int(red_box.box[3] * 99), int(red_box.centre[0] * 99)]) == (220, 40, 40)
    assert tuple(pixels[int(blue_box.box[3] * 99), int(blue_box.centre[0] * 99)]) == (40, 80, 230)


def test_windows_are_boxes_over_the_object_fill_kept_inside_the_canvas():
    layout = plan("a red circle to the left of a blue square")
    windows = latent_windows(layout, 16, 16, 2, 0.56)
    assert [(w.size_y, w.size_x) for w in windows] == [(8, 8), (8, 8)]
    assert all(0 <= w.left and w.left + w.size_x <= 16 and 0 <= w.top and w.top + w.size_y <= 16 for w in windows)
    assert windows[0].left < windows[1].left
    edge = Layout((LayoutObject("x", (0.0, 0.0, 0.3, 0.3)),))
    [window] = latent_windows(edge, 16, 16, 2, 0.56)
    assert (window.top, window.left) == (0, 0)


def _conditioning(count: int, width: int) -> sfumato.Conditioning:
    import torch

    generator = torch.Generator().manual_seed(0)
    states = torch.randn(count, 4, width, generator=generator)
    return sfumato.Conditioning(states, "test", width, 4)


@pytest.mark.slow
@pytest.mark.parametrize("background", ["flat", "prompt"])
def test_regional_generation_works_with_an_sd_shaped_unet(tmp_path, background):
    folder = save_tiny_sd_pipeline(tmp_path / "sd")
    layout = plan("a red circle to the left of a blue square on a gray background")
    context = st.make_context()
    images = st.call_node(layout_nodes.generate, context=context, layout=layout, conditioning=_conditioning(3, 32),
                          model=str(folder), steps=3, width=64, height=64, batch_size=2, seed=5,
                          background=background, decode="canvas")["images"]
    assert [image.size for image in images.images] == [(64, 64), (64, 64)]
    first, second = (np.asarray(image, dtype=np.int16) for image in images.images)
    assert np.abs(first - second).max() > 0  # each image has its own seed
    again = st.call_node(layout_nodes.generate, context=context, layout=layout, conditioning=_conditioning(3, 32),
                         model=str(folder), steps=3, width=64, height=64, batch_size=1, seed=5,
                         background=background, decode="canvas")["images"]
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(images.images[0]))


@pytest.mark.slow
def test_flat_background_keeps_the_canvas_outside_the_windows_plain(tmp_path):
    folder = save_tiny_sd_pipeline(tmp_path / "sd")
    layout = Layout((LayoutObject("red circle", (0.0, 0.0, 0.28, 0.28)),), "gray")
    image = st.call_node(layout_nodes.generate, layout=layout, conditioning=_conditioning(2, 32), model=str(folder),
                         steps=2, width=64, height=64, decode="windows")["images"].images[0]
    pixels = np.asarray(image)
    assert (pixels[40:, 40:] == (128, 128, 128)).all()  # far from the only window: the flat background


def test_conditioning_must_hold_one_prompt_per_region(tmp_path):
    folder = save_tiny_sd_pipeline(tmp_path / "sd")
    layout = plan("two red circles")
    with pytest.raises(ValueError) as caught:
        st.call_node(layout_nodes.generate, layout=layout, conditioning=_conditioning(2, 32), model=str(folder))
    assert "conditioning" in str(caught.value) and "give 3" in str(caught.value)


@pytest.mark.slow
def test_compose_graph_draws_a_composition_the_judge_accepts(tmp_path):
    from sfumato_zoo.judge import find_objects, scene_correct

    prompt, scene = next((p, s) for p, s in compositional_prompts(60) if s.category == "position")
    engine = sfumato.Engine(device="cpu", cache=False, output_dir=tmp_path)
    result = engine.run(sfumato.find_graph("compose"), params={"prompt": prompt, "batch_size": 2})
    images = result["images"]
    assert sum(scene_correct(find_objects(image)[1], scene) for image in images.images) >= 1
    assert list(tmp_path.rglob("*.png"))


def test_objects_without_a_colour_get_one_that_stands_out_from_the_background():
    layout = st.call_node(layout_nodes.plan, prompt="a triangle next to a circle, drawn on red",
                          palette=["red", "blue", "green"])["layout"]
    assert [o.caption for o in layout.objects] == ["blue triangle", "green circle"]
    assert layout.background == "red" and any("chosen" in note for note in layout.notes)
    named = st.call_node(layout_nodes.plan, prompt="a yellow circle and a square", palette=["yellow", "blue"])
    assert [o.caption for o in named["layout"].objects] == ["yellow circle", "blue square"]
    plain = st.call_node(layout_nodes.plan, prompt="a circle", palette=[])["layout"]
    assert [o.caption for o in plain.objects] == ["circle"]


def test_an_unknown_palette_colour_is_refused():
    with pytest.raises(ValueError, match="palette: unknown colour"):
        st.call_node(layout_nodes.plan, prompt="a circle", palette=["octarine"])


@pytest.mark.slow
def test_model_planner_output_always_parses_with_a_tiny_random_model(tmp_path):
    from tiny_models import save_tiny_causal_lm

    folder = save_tiny_causal_lm(tmp_path / "lm")
    prompt = "two red circles to the left of a blue square on black"
    layout = st.call_node(layout_nodes.plan, prompt=prompt, planner="model", language_model=str(folder))["layout"]
    assert isinstance(layout, Layout) and layout.planner == "model" and 1 <= len(layout) <= 6
    assert layout.background in layout_nodes.COLOUR_RGB
    from sfumato_layout.language_model import prompt_words

    words = set(prompt_words(prompt))  # the prompt's words, and "circle" for "circles"
    assert all(set(obj.caption.split()) <= words for obj in layout.objects)
    assert Layout.from_dict(json.loads(json.dumps(layout.as_dict()))).as_dict() == layout.as_dict()


def test_constrained_choice_follows_the_model_preference():
    import torch

    from sfumato_layout.language_model import ChoiceScorer

    class Tokens:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [{"red": 5, "blue": 6}.get(word, 1) for word in text.split()]}

    class Favours:
        """A stand-in causal LM whose next token is always id 6 ("blue")."""

        device = "cpu"
        config = type("Config", (), {"n_positions": 32})()

        def __call__(self, input_ids, attention_mask):
            logits = torch.zeros(*input_ids.shape, 8)
            logits[..., 6] = 10.0
            return type("Output", (), {"logits": logits})()

    scorer = ChoiceScorer(Favours(), Tokens())
    assert scorer.choose("the colour is", ["red", "blue"]) == "blue"
    assert scorer.choose("x " * 100, ["red", "blue"]) == "blue"  # a long text is cut to the context length


def test_model_planner_needs_a_model_folder():
    with pytest.raises(ValueError, match="language_model"):
        st.call_node(layout_nodes.plan, prompt="a circle", planner="model", language_model="")


def _pairs_file(tmp_path):
    from sfumato_zoo.dataset import layout_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "layout": lay}) + "\n" for p, lay in layout_pairs(0, 40)))
    return path


def test_zoo_layout_pairs_hold_the_scene_boxes_and_captions():
    from sfumato_zoo.dataset import layout_pairs

    for prompt, data in layout_pairs(3, 30):
        layout = Layout.from_dict(data)
        parsed = plan(prompt)
        assert [o.caption for o in layout.objects] == [o.caption for o in parsed.objects]
        assert layout.background == parsed.background


@pytest.mark.slow
def test_planner_training_resumes_from_its_checkpoint_exactly(tmp_path):
    import torch
    from safetensors.torch import load_file

    from sfumato_layout.training import TrainingConfig, train

    pairs = _pairs_file(tmp_path)
    small = {"width": 16, "layers": 1, "heads": 2, "batch_size": 4, "save_every": 2}
    losses: list[float] = []
    train(TrainingConfig(pairs, tmp_path / "whole", steps=4, **small), lambda step, loss: losses.append(loss))

    class Interrupted(Exception):
        pass

    def interrupt(step: int, loss: float) -> None:
        if step == 3:  # after the checkpoint of step 2: a run stopped part-way
            raise Interrupted

    with pytest.raises(Interrupted):
        train(TrainingConfig(pairs, tmp_path / "split", steps=4, **small), interrupt)
    resumed: list[int] = []
    train(TrainingConfig(pairs, tmp_path / "split", steps=4, **small), lambda step, loss: resumed.append(step))
    assert resumed == [3, 4]  # it went on from step 2
    whole, split = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "split"))
    assert all(torch.allclose(whole[key], split[key], atol=1e-6) for key in whole)
    assert len(losses) == 4
    layout = st.call_node(layout_nodes.plan, prompt="a red circle on black", planner="model",
                          language_model=str(tmp_path / "whole"))["layout"]
    assert isinstance(layout, Layout)


def test_training_refuses_a_file_without_pairs_with_exit_code_2(tmp_path, capsys):
    from sfumato.cli import main

    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert main(["layout", "train", "--pairs", str(bad), "--out", str(tmp_path / "out"), "--steps", "1"]) == 2
    assert "pairs.jsonl:1" in capsys.readouterr().err
