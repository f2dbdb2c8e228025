"""Every graph in graphs/ validates, and the model-free ones run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfumato import Engine, Graph, default_registry, validate_graph

REPO = Path(__file__).resolve().parents[1]
GRAPHS = sorted((REPO / "graphs").glob("*.json"))


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.name)
def test_shipped_graph_validates(path):
    assert validate_graph(Graph.load(path), default_registry()) == []


def test_enhance_folder_runs(tmp_path):
    result = Engine(output_dir=tmp_path).run(Graph.load(REPO / "graphs" / "enhance-folder.json"),
                                             folder=str(REPO / "examples" / "images"))
    [path] = result.report.files
    assert Path(path).exists() and result.report.count("ran") == 7


def test_prompt_list_runs():
    result = Engine().run(Graph.load(REPO / "graphs" / "prompt-list.json"))
    assert result["prompts"] == ["a (red:1.3) circle", "a [blurry] blue square", "a yellow triangle"]
    assert result["text"] == "a red circle, a blurry blue square, a yellow triangle"
    assert ("red", 1.3) in result["weights"].phrases
    assert "red" not in result["negative"].split(", ") and "watermark" in result["negative"]
