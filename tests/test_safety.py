"""The safety plugin: prompt screening (safety.screen_prompt) and image screening (safety.screen_images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sfumato
import sfumato.testing as st
from sfumato import Graph, NodeExecutionError, NodeStarted
from sfumato.cli import main
from sfumato_safety import prompts


def screen(text: str, **inputs):
    return st.call_node(prompts.screen_prompt, text=text, **inputs)


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
