"""The safety plugin: prompt screening (safety.screen_prompt) and image screening (safety.screen_images)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import sfumato
import sfumato.testing as st
from sfumato import Graph, NodeExecutionError, NodeStarted
from sfumato.cli import main
from sfumato_safety import prompts


@functools.cache
def shared_models() -> sfumato.ModelManager:
    """One model manager for the module's direct calls: the sentence encoder loads once, not per test."""
    return sfumato.ModelManager(sources=sfumato.default_registry().models)


def screen(text: str, **inputs):
    context = st.make_context(prompts.screen_prompt, models=shared_models())
    return st.call_node(prompts.screen_prompt, context=context, text=text, **inputs)


# -- safety.screen_prompt ---------------------------------------------------------


def test_prompt_resembling_a_concept_is_refused_with_the_concept_named():
    with pytest.raises(prompts.PromptRefusedError) as refused:
        screen("a bloody corpse with its guts ripped out")
    assert refused.value.reasons[0]["concept"] == "graphic violence"
    assert "graphic violence" in str(refused.value) and "similarity" in str(refused.value)


def test_harmful_clause_at_the_end_of_a_long_prompt_is_found():
    long_prompt = ("a beautiful landscape with mountains, a lake at sunrise, soft morning light, "
                   "birds over the water, a naked person")
    with pytest.raises(prompts.PromptRefusedError, match="sexual content"):
        screen(long_prompt)


@pytest.mark.parametrize("text", ["a red circle on a black background", "a blue square in the top left",
                                  "a kitten playing with yarn", "blood red sunset"])
def test_harmless_prompt_passes_unchanged(text):
    out = screen(text)
    assert out["text"] == text
    assert out["screening"]["verdict"] == "passed" and out["screening"]["reason"] == ""


def test_empty_prompt_passes_concept_screening():
    assert screen("   ")["screening"]["verdict"] == "passed"


def test_blocked_term_is_refused_in_any_case_as_a_whole_word():
    with pytest.raises(prompts.PromptRefusedError, match="blocked term 'gore'"):
        screen("A red circle with GORE!", terms=["gore"], concepts={})
    # Part of another word is not the term.
    assert screen("a gorey red circle", terms=["gore"], concepts={})["screening"]["verdict"] == "passed"


def test_blocked_phrase_matches_across_punctuation_and_spacing():
    with pytest.raises(prompts.PromptRefusedError, match="'red circle'"):
        screen("a big RED,   circle", terms=["red circle"], concepts={})


def test_flag_action_passes_the_prompt_and_reports_the_reason():
    out = screen("a nazi flag", action="flag")
    assert out["text"] == "a nazi flag"
    assert out["screening"]["verdict"] == "flagged"
    assert out["screening"]["concepts"] == "hate"
    assert "resembles the concept 'hate'" in out["screening"]["reason"]


def test_concept_list_is_configurable():
    concepts = {"fruit": ["a bowl of fruit", "apples and pears"]}
    with pytest.raises(prompts.PromptRefusedError, match="'fruit'"):
        screen("a green apple and a pear in a bowl", concepts=concepts)
    # The default list no longer applies.
    assert screen("a bloody corpse", concepts=concepts)["screening"]["verdict"] == "passed"


def test_concept_without_examples_is_an_error_naming_the_input():
    with pytest.raises(ValueError, match="input 'concepts': concept 'empty'"):
        screen("a red circle", concepts={"empty": []})


def test_threshold_out_of_range_is_refused():
    with pytest.raises(sfumato.ParameterError, match="threshold"):
        screen("a red circle", threshold=1.5)


SCREENED_GRAPH = {
    "version": 1,
    "name": "screened",
    "params": {"prompt": {"type": "str", "default": "a red circle on a black background"}},
    "nodes": {
        "screen": {"type": "safety.screen_prompt", "inputs": {"text": {"param": "prompt"}}},
        "encode": {"type": "encode.text", "inputs": {"texts": {"from": "screen.text"}}},
        "generate": {"type": "generate.image", "inputs": {"conditioning": {"from": "encode.conditioning"},
                                                          "steps": 1, "batch_size": 1}},
    },
    "outputs": {"images": "generate.images", "screening": "screen.screening"},
}


def _generator_starts(tmp_path: Path, prompt: str) -> tuple[int, Exception | None]:
    started: list[str] = []

    def count(event):
        if isinstance(event, NodeStarted) and event.node_type == "generate.image":
            started.append(event.node_id)

    engine = st.make_engine(output_dir=tmp_path, observers=[count], cache=False)
    try:
        engine.run(Graph.from_dict(SCREENED_GRAPH), {"prompt": prompt})
    except NodeExecutionError as error:
        return len(started), error
    return len(started), None


@pytest.mark.slow
def test_refused_prompt_never_reaches_the_generator(tmp_path):
    # The same graph with a harmless prompt does reach it: the count is real.
    assert _generator_starts(tmp_path, "a red circle on a black background") == (1, None)
    starts, error = _generator_starts(tmp_path, "a bloody corpse")
    assert starts == 0
    assert isinstance(error.original, prompts.PromptRefusedError)
    assert error.report.nodes["screen"].status == "failed"
    assert "graphic violence" in error.report.nodes["screen"].error
    assert error.report.nodes["generate"].status != "ran"


def _write_graph(tmp_path: Path, graph: dict) -> str:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    return str(path)


SCREEN_ONLY = {
    "version": 1,
    "name": "screen-only",
    "params": {"prompt": {"type": "str", "default": "a red circle"},
               "action": {"type": "str", "default": "refuse"}},
    "nodes": {"screen": {"type": "safety.screen_prompt",
                         "inputs": {"text": {"param": "prompt"}, "action": {"param": "action"}}}},
    "outputs": {"text": "screen.text", "screening": "screen.screening"},
}


def test_refused_run_ends_with_the_reason_and_exit_code_1(tmp_path, capsys):
    graph = _write_graph(tmp_path, SCREEN_ONLY)
    code = main(["run", graph, "--out", str(tmp_path / "out"), "--set", "prompt=a bloody corpse", "--no-cache"])
    assert code == 1
    err = capsys.readouterr().err
    assert "refused by safety screening" in err and "graphic violence" in err
    assert "Traceback" not in err


def test_flagged_reason_is_in_the_run_report(tmp_path, capsys):
    graph = _write_graph(tmp_path, SCREEN_ONLY)
    code = main(["run", graph, "--out", str(tmp_path / "out"), "--set", "prompt=a nazi flag",
                 "--set", "action=flag", "--json", "--no-cache"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["screening"]["verdict"] == "flagged"
    assert report["outputs"]["screening"]["concepts"] == "hate"
    assert report["outputs"]["screening"]["similarity"] >= 0.55


# -- safety.screen_images --------------------------------------------------------------


RED, BLUE = (220, 30, 30), (30, 30, 220)


def _solid(colour, size: int = 48):
    from PIL import Image

    return Image.new("RGB", (size, size), colour)


def _checker_embeddings(model, processor, images):
    import torch

    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = model.visual_projection(model.vision_model(pixels)[1])
    return torch.nn.functional.normalize(embeds, dim=-1)


def tiny_safety_checker(folder: Path, flagged_colour=RED, other_colour=BLUE) -> Path:
    """A tiny random diffusers safety checker whose one calibrated "concept" is ``flagged_colour``.

    Every concept embedding is the embedding of a solid ``flagged_colour`` image, with a threshold
    halfway between its similarity to itself (1) and to ``other_colour``: the first is flagged, the
    second not, by the checker's own rule.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 99, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8)
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    flagged, other = _checker_embeddings(model, processor, [_solid(flagged_colour), _solid(other_colour)])
    threshold = float((1.0 + flagged @ other) / 2)
    with torch.no_grad():
        model.concept_embeds.copy_(flagged.expand_as(model.concept_embeds))
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(2.0)  # never "special care"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def tiny_classifier(folder: Path, nsfw: bool) -> Path:
    """A tiny random ViT classifier (labels normal / nsfw) whose bias decides: every image is ``nsfw`` or none."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=32, patch_size=8, id2label={0: "normal", 1: "nsfw"},
                       label2id={"normal": 0, "nsfw": 1})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 8.0] if nsfw else [8.0, 0.0]))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checker_folder(tmp_path_factory) -> Path:
    return tiny_safety_checker(tmp_path_factory.mktemp("checker") / "safety_checker")


def screen_images(images, model, **inputs):
    from sfumato_safety import images as image_nodes

    return st.call_node(image_nodes.screen_images, images=images, model=str(model), **inputs)


def test_safety_checker_flags_only_its_concept_and_passes_images_with_flag(checker_folder):
    batch = sfumato.ImageBatch((_solid(BLUE), _solid(RED), _solid(BLUE)), ("a", "b", "c"))
    out = screen_images(batch, checker_folder, action="flag")
    assert out["screening"]["flagged"] == "1" and out["screening"]["verdict"] == "flagged"
    assert out["screening"]["classifier"] == "safety-checker"
    assert out["images"].images == batch.images and out["images"].labels == batch.labels


def test_blur_replaces_only_the_flagged_images(checker_folder):
    from PIL import ImageDraw

    red = _solid(RED, 64)
    ImageDraw.Draw(red).rectangle([0, 0, 31, 63], fill=(200, 20, 20))  # an edge the blur must soften
    batch = sfumato.ImageBatch((_solid(BLUE), red))
    out = screen_images(batch, checker_folder, action="blur")
    assert out["images"].images[0] is batch.images[0]
    import numpy as np

    before, after = np.asarray(red, dtype=float), np.asarray(out["images"].images[1], dtype=float)
    assert np.abs(np.diff(after, axis=1)).max() < np.abs(np.diff(before, axis=1)).max() / 2


def test_block_drops_flagged_images_and_keeps_labels_in_step(checker_folder):
    batch = sfumato.ImageBatch((_solid(RED), _solid(BLUE)), ("red", "blue"))
    out = screen_images(batch, checker_folder, action="block")
    assert out["images"].labels == ("blue",) and len(out["images"]) == 1
    assert out["screening"]["count"] == 1


def test_block_of_every_image_stops_with_a_clear_error(checker_folder):
    from sfumato_safety.images import ImagesBlockedError

    with pytest.raises(ImagesBlockedError, match="blocked every image"):
        screen_images(sfumato.ImageBatch((_solid(RED),)), checker_folder, action="block")


def test_pipeline_folder_with_a_safety_checker_is_understood(tmp_path):
    pipeline = tmp_path / "pipeline"
    tiny_safety_checker(pipeline / "safety_checker")
    (pipeline / "safety_checker" / "preprocessor_config.json").rename(pipeline / "preprocessor_config.json")
    (pipeline / "feature_extractor").mkdir()
    (pipeline / "preprocessor_config.json").rename(pipeline / "feature_extractor" / "preprocessor_config.json")
    (pipeline / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
         "feature_extractor": ["transformers", "CLIPImageProcessor"]}))
    out = screen_images(sfumato.ImageBatch((_solid(RED), _solid(BLUE))), pipeline, action="flag")
    assert out["screening"]["flagged"] == "0"


@pytest.mark.parametrize("nsfw,verdict", [(True, "flagged"), (False, "passed")])
def test_image_classifier_flags_by_label_probability(tmp_path, nsfw, verdict):
    folder = tiny_classifier(tmp_path / "classifier", nsfw)
    out = screen_images(sfumato.ImageBatch((_solid(RED), _solid(BLUE))), folder, action="flag")
    assert out["screening"]["verdict"] == verdict
    assert out["screening"]["classifier"] == "classifier"
    assert out["screening"]["count"] == (2 if nsfw else 0)


def test_label_the_classifier_lacks_is_an_error_listing_its_labels(tmp_path):
    folder = tiny_classifier(tmp_path / "classifier", True)
    with pytest.raises(ValueError, match=r"input 'labels'.*\['normal', 'nsfw'\]"):
        screen_images(sfumato.ImageBatch((_solid(RED),)), folder, labels=["gore"])


def test_folder_that_is_no_classifier_is_an_error_naming_the_input(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(sfumato.ModelNotFoundError, match="input 'model'.*is no image classifier"):
        screen_images(sfumato.ImageBatch((_solid(RED),)), tmp_path)


def test_screened_images_in_a_graph_never_save_blocked_ones(tmp_path, checker_folder):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    _solid(RED).save(folder / "a-red.png")
    _solid(BLUE).save(folder / "b-blue.png")
    graph = {"version": 1, "name": "screened-images", "nodes": {
        "load": {"type": "image.load", "inputs": {"path": str(folder)}},
        "screen": {"type": "safety.screen_images", "inputs": {"images": {"from": "load.images"},
                                                              "model": str(checker_folder), "action": "block"}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "screen.images"}, "template": "{label}.png"}}},
        "outputs": {"screening": "screen.screening"}}
    result = st.make_engine(output_dir=tmp_path / "out", cache=False).run(Graph.from_dict(graph))
    assert [Path(p).name for p in result.report.files] == ["b-blue.png"]
    assert result.report.outputs["screening"]["flagged"] == "0"
    assert Image.open(result.report.files[0]).getpixel((0, 0)) == BLUE
