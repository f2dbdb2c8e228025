"""The language-model layout planner: its training, its decoding, and the planner the plugin ships."""

from __future__ import annotations

import itertools
import json
import random

import pytest

import sfumato
import sfumato.testing as st
from sfumato_layout import WEIGHTS, Layout, LayoutObject
from sfumato_layout import nodes as layout_nodes
from sfumato_layout.language_model import GRID, prompt_words, snap_box, training_text
from sfumato_layout.layout import fill_colours
from sfumato_layout.training import TrainingConfig, learning_rate

SHIPPED = WEIGHTS / "tiny-layout-planner"


def test_prompt_words_offer_each_plurals_singular():
    words = prompt_words("exactly three red circles and two boxes, drawn on gray")
    assert words[:4] == ["exactly", "three", "red", "circles"]
    assert {"circle", "box", "boxes", "gray"} <= set(words)
    assert "glas" not in prompt_words("a glass")  # -ss is no plural


def test_training_boxes_snap_to_the_decoder_grid_and_stay_open():
    assert snap_box([0.39, 0.32, 0.62, 0.55]) == ("0.40", "0.30", "0.60", "0.55")
    for box in ([0.5, 0.5, 0.51, 0.52], [0.99, 0.0, 1.0, 0.01], [0.0, 0.98, 0.02, 1.0]):
        x0, y0, x1, y1 = snap_box(box)
        assert {x0, y0, x1, y1} <= set(GRID) and float(x0) < float(x1) and float(y0) < float(y1)
    text = training_text("a red circle", {"background": "black",
                                          "objects": [{"caption": "red circle", "box": [0.12, 0.1, 0.41, 0.38]}]})
    assert text.endswith('{"background": "black", "objects": [{"caption": "red circle", "box": [0.10, 0.10, 0.40, 0.40]}]}')


def test_the_compact_format_writes_grid_steps_and_the_decoder_still_returns_json_ready_layouts(tmp_path):
    from tiny_models import save_tiny_causal_lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfumato_layout.language_model import model_format, plan_with_model

    layout = {"background": "gray", "objects": [{"caption": "red circle", "box": [0.12, 0.1, 0.41, 0.38]},
                                                {"caption": "red circle", "box": [0.6, 0.6, 0.9, 0.9]}]}
    assert training_text("two red circles", layout, "compact").endswith(
        "layout: gray ; red circle : 2 2 8 8 ; red circle : 12 12 18 18 .")
    folder = save_tiny_causal_lm(tmp_path / "lm")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    assert model_format(model) == "json"
    model.config.layout_format = "compact"
    prompt = "two red circles to the left of a blue square on black"
    planned = plan_with_model(model, tokenizer, prompt)
    assert planned.planner == "model" and 1 <= len(planned) <= 6 and planned.background in layout_nodes.COLOUR_RGB
    assert all(set(obj.caption.split()) <= set(prompt_words(prompt)) for obj in planned.objects)
    assert Layout.from_dict(json.loads(json.dumps(planned.as_dict()))).as_dict() == planned.as_dict()


def test_prompt_noise_starts_once_the_model_has_learnt_to_copy():
    from sfumato_layout.training import noise_scale

    config = TrainingConfig(pairs=None, out=None, steps=1000, noise_from=0.3)  # type: ignore[arg-type]
    assert [noise_scale(config, step) for step in (0, 299, 300, 450, 600, 999)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_learning_rate_warms_up_then_follows_a_cosine_to_a_tenth():
    config = TrainingConfig(pairs=None, out=None, steps=1000, warmup=100, learning_rate=1e-3)  # type: ignore[arg-type]
    rates = [learning_rate(config, step) for step in range(1000)]
    assert rates[0] == pytest.approx(1e-5) and rates[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[99:]))
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)


def test_a_training_batch_learns_the_layout_only_and_hides_only_prompt_words(tmp_path):
    from sfumato_layout.training import build_tokenizer, training_batch

    texts = [training_text(f"a {colour} circle on a black background",
                           {"background": "black", "objects": [{"caption": f"{colour} circle", "box": [0, 0, 0.3, 0.3]}]})
             for colour in ("red", "blue", "green")]
    tokenizer = build_tokenizer(texts, tmp_path)
    config = TrainingConfig(pairs=None, out=None, unk_rate=0.5, unk_insert=0.0)  # type: ignore[arg-type]
    inputs, _, labels = training_batch(tokenizer, texts, random.Random(0), config)
    ids = tokenizer(texts[0] + tokenizer.eos_token)["input_ids"]
    head = ids.index(tokenizer.convert_tokens_to_ids("{"))  # the layout starts at its first brace
    assert (labels[0, :head] == -100).all() and labels[0, head:len(ids)].tolist() == ids[head:]
    original = tokenizer([text + tokenizer.eos_token for text in texts], padding=True, return_tensors="pt").input_ids
    changed = (inputs != original).nonzero().tolist()
    assert changed and all(col < head - 2 for _, col in changed)  # never "layout:" nor the layout
    assert all(int(inputs[row, col]) == tokenizer.unk_token_id for row, col in changed)


def test_inserted_unknown_words_shift_the_prompt_but_keep_the_layout_and_its_labels(tmp_path):
    from sfumato_layout.training import build_tokenizer, training_batch

    texts = [training_text("a red circle on a black background",
                           {"background": "black", "objects": [{"caption": "red circle", "box": [0, 0, 0.3, 0.3]}]})]
    tokenizer = build_tokenizer(texts, tmp_path)
    config = TrainingConfig(pairs=None, out=None, unk_rate=0.0, unk_insert=0.5)  # type: ignore[arg-type]
    inputs, mask, labels = training_batch(tokenizer, texts, random.Random(1), config)
    ids = tokenizer(texts[0] + tokenizer.eos_token)["input_ids"]
    start = ids.index(tokenizer.convert_tokens_to_ids("{")) - 2  # "layout" ":" then the layout
    row, kept = inputs[0].tolist(), labels[0].tolist()
    assert len(row) > len(ids) and int(mask[0].sum()) == len(row)
    assert row[-(len(ids) - start):] == ids[start:]  # "layout:" and the layout, untouched, at the end
    assert [t for t in row[:len(row) - len(ids) + start] if t != tokenizer.unk_token_id] == ids[:start]
    assert [t for t in kept if t != -100] == ids[start + 2:]  # labels: exactly the layout (and the end)
    assert kept[len(row) - len(ids) + start + 2] == ids[start + 2]  # aligned with its input position


def test_open_colours_are_filled_from_the_palette_alike_for_alike_captions():
    layout = Layout((LayoutObject("circle", (0, 0, 0.3, 0.3)), LayoutObject("circle", (0.5, 0, 0.8, 0.3)),
                     LayoutObject("red square", (0, 0.5, 0.3, 0.8))), "blue", planner="model")
    filled = fill_colours(layout, ("red", "blue", "green"))
    assert [o.caption for o in filled.objects] == ["green circle", "green circle", "red square"]
    assert filled.notes == ("colour 'green' chosen for 'circle'",) and filled.planner == "model"
    assert fill_colours(layout, ()).objects == layout.objects


def test_a_missing_shipped_planner_names_the_command_that_makes_it():
    context = st.make_context(models=sfumato.ModelManager(sources={}))
    with pytest.raises(sfumato.ModelNotFoundError) as caught:
        layout_nodes._load_language_model(context, "tiny-layout-planner")
    assert "sfumato layout train" in str(caught.value) and "language_model" in str(caught.value)


@pytest.mark.slow
def test_training_records_its_command_time_and_losses(tmp_path):
    from sfumato.cli import main
    from sfumato_zoo.dataset import layout_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "layout": lay}) + "\n" for p, lay in layout_pairs(0, 12)))
    out = tmp_path / "planner"
    assert main(["layout", "train", "--pairs", str(pairs), "--out", str(out), "--steps", "3", "--batch-size", "2",
                 "--width", "16", "--layers", "1", "--heads", "2", "--threads", "1"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 3 and record["seconds"] >= 0 and [s for s, _ in record["losses"]] == [1, 2, 3]
    assert record["command"].startswith("sfumato layout train --pairs") and record["config"]["width"] == 16


def test_width_not_a_multiple_of_heads_is_refused_with_exit_code_2(tmp_path, capsys):
    from sfumato.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a circle", "layout": {"background": "black", "objects": []}}\n')
    assert main(["layout", "train", "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--width", "10",
                 "--heads", "4"]) == 2
    assert "--width" in capsys.readouterr().err


# --- the shipped planner -------------------------------------------------------------------------------------------

def test_the_shipped_planner_is_small_and_records_how_it_was_made():
    record = json.loads((SHIPPED / "training.json").read_text())
    assert record["command"].startswith("sfumato layout train --pairs pairs.jsonl --out planner --steps 3000")
    assert record["steps"] == 3000 and record["examples"] == 20000
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size < 5_000_000 and not (SHIPPED / "checkpoint").exists()
    assert (SHIPPED / "model.safetensors").is_file() and (SHIPPED / "README.md").is_file()


@pytest.mark.slow
def test_the_model_planner_defaults_to_the_shipped_planner_and_reads_held_out_wordings():
    from sfumato_zoo.dataset import relation_holds

    prompt = "there is a red square to the left of a blue circle and the background is gray"
    layout = st.call_node(layout_nodes.plan, prompt=prompt, planner="model")["layout"]
    assert layout.planner == "model" and layout.background == "gray"
    assert [o.caption for o in layout.objects] == ["red square", "blue circle"]
    assert relation_holds(layout.objects[0].centre, layout.objects[1].centre, "left of")
    counted = st.call_node(layout_nodes.plan, prompt="exactly three yellow triangles drawn on black",
                           planner="model")["layout"]
    assert [o.caption for o in counted.objects] == ["yellow triangle"] * 3
