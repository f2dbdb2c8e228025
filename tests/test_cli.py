"""The command line: exit codes, JSON output, listings, and no torch for checking graphs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sfumato.cli import main

REPO = Path(__file__).resolve().parents[1]
CARD = str(REPO / "graphs" / "prompt-card.json")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfumato.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_validate_does_not_import_torch():
    code = ("import sys; from sfumato.cli import main; rc = main(['validate', %r]);"
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)") % CARD
    for command in (["validate", CARD], ["nodes"], ["plugins"], ["schema"]):
        script = code.replace(repr(["validate", CARD]), repr(command))
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, (command, completed.stderr)


def test_validate_reports_every_problem_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "nodes": {
        "a": {"type": "text.normalise", "inputs": {"text": "x"}},
        "b": {"type": "image.sharpen", "inputs": {"images": {"from": "zz.images"}, "radius": -1}}}}))
    assert main(["validate", str(bad), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert not report["valid"]
    assert {i["path"] for i in report["issues"]} >= {"nodes.a.type", "nodes.b.inputs.images", "nodes.b.inputs.radius"}


def test_validate_prints_issues_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "nodes": {')
    completed = run_cli("validate", str(bad))
    assert completed.returncode == 2
    assert "line 1" in completed.stderr and "Traceback" not in completed.stderr


def test_valid_graph_exits_0(capsys):
    assert main(["validate", CARD]) == 0
    assert "valid" in capsys.readouterr().out


def test_run_writes_a_png_and_a_json_report(tmp_path, capsys):
    assert main(["run", CARD, "--out", str(tmp_path), "--set", "prompt=a green triangle", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok"
    assert {n["status"] for n in report["nodes"].values()} == {"ran"}
    [path] = report["files"]
    assert Path(path).exists() and Path(path).parent == tmp_path


def test_second_run_with_cache_dir_reruns_nothing(tmp_path, capsys):
    args = ["run", CARD, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["ran"] == 0


def test_bad_set_value_exits_2(tmp_path, capsys):
    assert main(["run", CARD, "--out", str(tmp_path), "--set", "seed=abc"]) == 2
    assert "seed" in capsys.readouterr().err
    assert main(["run", CARD, "--out", str(tmp_path), "--set", "nope"]) == 2


def test_failing_node_exits_1_naming_the_node(tmp_path, capsys):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {
        "clean": {"type": "text.normalize", "inputs": {"text": "   "}},
        "card": {"type": "image.text_card", "inputs": {"text": {"from": "clean.text"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}}}}}))
    assert main(["run", str(graph), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "'clean'" in err and "text.normalize" in err and "empty after normalization" in err


def test_nodes_listing_show_and_json(capsys):
    assert main(["nodes"]) == 0
    assert "image.sharpen" in capsys.readouterr().out
    assert main(["nodes", "show", "image.sharpen", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    radius = next(i for i in shown["inputs"] if i["name"] == "radius")
    assert radius["default"] == 2.0 and radius["ge"] == 0 and radius["le"] == 50
    assert main(["nodes", "show", "image.sharpn"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_plugins_json_lists_builtin_plugins(capsys):
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert plugins["text"]["status"] == "ok" and plugins["text"]["nodes"] > 0
    assert plugins["imaging"]["distribution"] == "sfumato"


def test_schema_has_graph_and_node_input_schemas(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "inputs:image.sharpen" in schema["$defs"]
    radius = schema["$defs"]["inputs:image.sharpen"]["properties"]["radius"]
    assert any(option.get("maximum") == 50 for option in radius["anyOf"])


def test_nodes_markdown_matches_docs():
    completed = run_cli("nodes", "--markdown")
    assert completed.returncode == 0
    docs = (REPO / "docs" / "nodes.md").read_text()
    assert completed.stdout == docs, "docs/nodes.md is stale: run `sfumato nodes --markdown > docs/nodes.md`"


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_draw_text_formats(fmt, capsys):
    assert main(["draw", CARD, "--format", fmt]) == 0
    text = capsys.readouterr().out
    assert "text.normalize" in text and "text → subject" in text and "prompt: str" in text


# -- bad input: exit 2 with a message, before anything loads (issues 12.9 and 13.9) -----------

TEXT_TO_IMAGE = str(REPO / "graphs" / "text-to-image.json")


def test_folder_given_as_the_graph_exits_2_naming_the_folder(tmp_path, capsys):
    for command in ("run", "validate"):
        assert main([command, str(tmp_path)]) == 2
        assert "is a folder, not a graph file" in capsys.readouterr().err


def test_unknown_device_exits_2_naming_the_choices(tmp_path, capsys):
    assert main(["run", CARD, "--device", "foo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'foo'" in err and "cuda:N" in err and "Traceback" not in err


def test_unknown_device_in_a_sweep_exits_2(tmp_path, capsys):
    assert main(["run", CARD, "--device", "gpu0", "--sweep", "seed=0..1", "--out", str(tmp_path)]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err


def test_cuda_without_a_gpu_exits_2_before_any_model_loads(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "out"
    assert main(["run", TEXT_TO_IMAGE, "--device", "cuda", "--out", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert "torch sees no CUDA GPU" in captured.err
    assert captured.out == "" and not out.exists()  # no report: nothing ran, nothing loaded


def test_grid_over_an_axis_that_was_not_swept_exits_2_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", CARD, "--sweep", "seed=0..1", "--grid", "seed,style", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--grid axis 'style' was not swept (swept: seed)" in err
    assert not out.exists()


def test_set_value_with_a_huge_integer_exits_2(tmp_path, capsys):
    assert main(["run", CARD, "--set", "seed=" + "9" * 5000, "--out", str(tmp_path)]) == 2
    assert "integers must fit in 64 bits" in capsys.readouterr().err


def test_sweep_range_over_the_limit_exits_2(tmp_path, capsys):
    assert main(["run", CARD, "--sweep", "seed=0..20000000", "--out", str(tmp_path)]) == 2
    assert "20,000,001 runs, more than the limit of 100,000" in capsys.readouterr().err


def test_validate_names_a_template_width_over_the_limit(tmp_path, capsys):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {
        "t": {"type": "text.template", "inputs": {"template": "{subject:>999999999}", "subject": "x"}}}}))
    assert main(["validate", str(graph), "--json"]) == 2
    [issue] = json.loads(capsys.readouterr().out)["issues"]
    assert issue["node"] == "t" and "template" in issue["message"] and "Limits.max_text_length" in issue["message"]


def test_drawing_a_graph_with_a_cycle_as_svg_exits_2_naming_the_nodes(tmp_path, capsys, monkeypatch):
    import sfumato.graph.drawing

    monkeypatch.setattr(sfumato.graph.drawing.shutil, "which", lambda name: None)  # sfumato's own SVG, not Graphviz's
    graph = tmp_path / "cycle.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {
        "a": {"type": "text.value", "inputs": {"text": {"from": "b.text"}}},
        "b": {"type": "text.value", "inputs": {"text": {"from": "a.text"}}}}}))
    assert main(["draw", str(graph), "--output", str(tmp_path / "g.svg")]) == 2
    assert "cycle (between nodes 'a', 'b')" in capsys.readouterr().err


def test_cuda_without_a_gpu_in_a_local_sweep_exits_2_before_any_run(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "out"
    assert main(["run", CARD, "--device", "cuda:0", "--sweep", "seed=0..1", "--out", str(out)]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err and not out.exists()


def test_limit_option_raises_or_lowers_a_limit_for_that_command(tmp_path, capsys):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "x", "width": 256, "height": 256}}}}))
    assert main(["validate", str(graph), "--limit", "max_image_pixels=10000"]) == 2
    assert "Limits.max_image_pixels" in capsys.readouterr().err
    assert main(["validate", str(graph)]) == 0  # the lowered limit held for that command only


def test_unknown_limit_name_exits_2_listing_the_names(tmp_path, capsys):
    assert main(["run", CARD, "--limit", "pixels=5", "--out", str(tmp_path)]) == 2
    assert "max_image_pixels, max_batch_pixels, max_text_length, max_sweep_runs" in capsys.readouterr().err


def test_cuda_device_index_that_does_not_exist_exits_2_naming_it(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", CARD, "--device", "cuda:99", "--out", str(out)]) == 2
    assert "'cuda:99'" in capsys.readouterr().err and not out.exists()
