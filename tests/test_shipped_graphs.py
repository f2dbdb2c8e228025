"""Every shipped graph validates, the model-free ones run, and all are found by name from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import sfumato
from sfumato import Engine, Graph, default_registry, resolve_graph_path, shipped_graphs, validate_graph
from sfumato.cli.main import main
from sfumato.graph.shipped import SHIPPED_GRAPHS_DIR

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


def test_prompt_list_runs(tmp_path):
    result = Engine(output_dir=tmp_path).run(Graph.load(REPO / "graphs" / "prompt-list.json"))
    assert result["prompts"] == ["a (red:1.3) circle", "a [blurry] blue square", "a yellow triangle"]
    assert result["text"] == "a red circle, a blurry blue square, a yellow triangle"
    assert ("red", 1.3) in result["weights"].phrases
    assert "red" not in result["negative"].split(", ") and "watermark" in result["negative"]


def test_shipped_graphs_are_package_data_and_the_repository_folder_is_the_same_files():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'sfumato = ["shipped_graphs/*.json"]' in pyproject
    assert SHIPPED_GRAPHS_DIR.parent == Path(sfumato.__file__).resolve().parent
    assert sorted(shipped_graphs()) == sorted(p.stem for p in GRAPHS) and "text-to-image" in shipped_graphs()
    assert (REPO / "graphs").resolve() == SHIPPED_GRAPHS_DIR


def test_a_shipped_graph_runs_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no graphs/ here
    assert main(["run", "prompt-card", "--out", "o", "--set", "prompt=a red circle"]) == 0
    assert len(list((tmp_path / "o").glob("prompt-card-*.png"))) == 1
    assert main(["validate", "text-to-image.json"]) == 0


def test_a_file_in_the_current_folder_wins_over_a_shipped_graph_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text-to-image").write_text("{}")
    assert resolve_graph_path("text-to-image") == Path("text-to-image")
    assert resolve_graph_path("prompt-card") == SHIPPED_GRAPHS_DIR / "prompt-card.json"


def test_an_unknown_graph_name_lists_the_shipped_graphs_with_the_closest_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "text-to-imag"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'text-to-image'" in err and "compare-backends" in err and "Traceback" not in err


def test_example_data_defaults_outside_a_clone_name_the_parameter_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    events = []
    monkeypatch.setattr(sfumato.Engine, "emit", lambda self, event: events.append(event))
    assert main(["run", "retrieve", "--out", "o"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "examples/reference-index" in err and "--set index=PATH" in err and "source repository" in err
    assert events == [] and not (tmp_path / "o").exists()  # refused before anything ran


def test_example_data_defaults_are_fine_from_the_repository_root_or_when_set(tmp_path, monkeypatch):
    graph = Graph.load(resolve_graph_path("enhance-folder"))
    monkeypatch.chdir(REPO)
    assert sfumato.graph.shipped.missing_example_paths(graph) == []
    monkeypatch.chdir(tmp_path)
    assert [i.path for i in sfumato.graph.shipped.missing_example_paths(graph)] == ["params.folder.default"]
    assert sfumato.graph.shipped.missing_example_paths(graph, {"folder": "mine"}) == []


def test_graphs_command_lists_every_shipped_graph_and_what_needs_setting_outside_a_clone(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["graphs", "--json"]) == 0
    import json

    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(shipped_graphs())
    assert rows["retrieve"]["needs"] == ["index"] and rows["text-to-image"]["needs"] == []
