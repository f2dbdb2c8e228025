"""Sweeps: parsing, cross vs zip, shared work, batching, failures, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BATCH_SIZES, CALLS
from sfumato import Engine, Graph, ParameterError
from sfumato.cli import main
from sfumato.run.sweeps import combine, parse_axis

REPO = Path(__file__).resolve().parents[1]


def test_range_list_and_file_forms(tmp_path):
    assert parse_axis("seed=0..3").values == ("0", "1", "2", "3")
    assert parse_axis("seed=10..0..-5").values == ("10", "5", "0")
    assert parse_axis("guidance=3, 5,7").values == ("3", "5", "7")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\n# a comment\na blue square\n")
    assert parse_axis(f"prompt=@{prompts}").values == ("a red circle", "a blue square")


@pytest.mark.parametrize("text, message", [
    ("seed", "NAME=VALUES"), ("=1,2", "NAME=VALUES"), ("seed=", "no values"), ("seed=5..1..1", "empty"),
    ("a=1,,2", "empty value"), ("p=@/no/such/file.txt", "cannot read"),
])
def test_bad_sweep_forms_have_clear_errors(text, message):
    with pytest.raises(ParameterError, match=message):
        parse_axis(text)


def test_cross_and_zip_counts():
    axes = [parse_axis("seed=0..3"), parse_axis("prompt=a,b,c,d")]
    assert len(combine(axes)) == 16
    zipped = combine(axes, zip_axes=True)
    assert len(zipped) == 4 and zipped[2] == {"seed": "2", "prompt": "c"}
    with pytest.raises(ParameterError, match="equal length"):
        combine([parse_axis("seed=0..3"), parse_axis("p=a,b")], zip_axes=True)


def _sweep_graph() -> Graph:
    return Graph.from_dict({"version": 1, "params": {"x": {"type": "float", "default": 1.0},
                                                     "f": {"type": "float", "default": 2.0}}, "nodes": {
        "base": {"type": "test.number", "inputs": {"value": 10}},
        "shared": {"type": "test.add", "inputs": {"a": {"from": "base.value"}, "b": 1}},
        "scaled": {"type": "test.scale", "inputs": {"a": {"from": "shared.value"}, "factor": {"param": "f"}}},
        "out": {"type": "test.add", "inputs": {"a": {"from": "scaled.value"}, "b": {"param": "x"}}}},
        "outputs": {"y": "out.value"}})


def test_work_that_does_not_depend_on_the_swept_values_runs_once(registry, tmp_path):
    engine = Engine(registry, output_dir=tmp_path)
    outcomes = engine.run_many(_sweep_graph(), [{"x": x} for x in range(6)])
    assert [o.outputs["y"] for o in outcomes] == [22.0 + x for x in range(6)]
    assert CALLS["test.number"] == 1 and CALLS["test.scale"] == 1
    assert CALLS["test.add"] == 1 + 6  # 'shared' once, 'out' per run


def test_batchable_node_calls_are_merged_up_to_the_batch_size(registry, tmp_path):
    engine = Engine(registry, output_dir=tmp_path)
    outcomes = engine.run_many(_sweep_graph(), [{"f": f} for f in range(1, 8)], batch_size=3)
    assert BATCH_SIZES == [3, 3, 1]
    assert [o.outputs["y"] for o in outcomes] == [11.0 * f + 1 for f in range(1, 8)]


def test_batched_results_equal_one_by_one(registry, tmp_path):
    param_sets = [{"f": f, "x": x} for f in (1.5, 2.5) for x in (0, 1)]
    batched = Engine(registry, output_dir=tmp_path).run_many(_sweep_graph(), param_sets, batch_size=8)
    single = [Engine(registry, output_dir=tmp_path).run(_sweep_graph(), p)["y"] for p in param_sets]
    assert [o.outputs["y"] for o in batched] == single


def test_a_failing_run_does_not_stop_the_others(registry, tmp_path):
    outcomes = Engine(registry, output_dir=tmp_path).run_many(
        _sweep_graph(), [{"f": 1.0}, {"f": -1.0}, {"f": 3.0}, {"x": "not a number"}], batch_size=8)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "failed"]
    assert "negative factor" in outcomes[1].error and "'x'" in outcomes[3].error
    assert outcomes[1].report.nodes["out"].status == "blocked"
    assert outcomes[2].outputs["y"] == 34.0


def test_cli_sweep_writes_images_report_and_grid(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    code = main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path / "out"),
                 "--sweep", f"prompt=@{prompts}", "--sweep", "seed=0..2", "--grid", "seed,prompt", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"runs": 6, "ok": 6, "failed": 0}
    files = [f for run in report["runs"] for f in run["files"]]
    assert len(set(files)) == 6 and all(Path(f).exists() for f in files)
    assert {run["params"]["seed"] for run in report["runs"]} == {0, 1, 2}
    grid = Image.open(report["grid"])
    assert grid.width > 3 * 100 and np.asarray(grid).std() > 0
    assert (tmp_path / "out" / "prompt-card-sweep.json").exists()


def test_cli_sweep_reports_failed_runs_and_exits_1(tmp_path, capsys):
    code = main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path),
                 "--sweep", "prompt=a red circle,\u200b", "--json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert [run["status"] for run in report["runs"]] == ["ok", "failed"]
    assert "empty after normalization" in report["runs"][1]["error"]


def test_a_prompt_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    prompts = tmp_path / "latin1.txt"
    prompts.write_bytes("un cercle \xe9carlate\n".encode("latin-1"))
    with pytest.raises(ParameterError, match="not UTF-8"):
        parse_axis(f"prompt=@{prompts}")


def test_sweep_table_shows_the_swept_values_not_the_fixed_ones(tmp_path, capsys):
    long_prompt = "a very long prompt about a red circle on a black background that is not swept at all"
    code = main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--sweep", "seed=7..9",
                 "--sweep", "style=plain,bold", "--set", f"prompt={long_prompt}"])
    assert code == 0
    table = capsys.readouterr().err
    header = next(line for line in table.splitlines() if "run" in line and "status" in line)
    assert "seed" in header and "style" in header and "params" not in header
    assert all(f" {seed} " in table for seed in (7, 8, 9)) and "bold" in table
    assert "very long prompt" not in table


def test_each_sweep_run_reports_its_own_seconds_not_the_sweep_total(tmp_path, capsys):
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--sweep", "seed=0..3",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    seconds = [run["seconds"] for run in report["runs"]]
    # Runs advance together, so each one's start-to-end wall time is the whole sweep's; its own is less.
    assert sum(seconds) <= report["seconds"]
    assert report["axes"] == {"seed": ["0", "1", "2", "3"]}


def test_sweep_json_reports_model_loads_apart_from_runs():
    from sfumato import RunOutcome, RunReport
    from sfumato.cli.sweep_cmd import sweep_report

    reports = []
    for index in range(2):
        report = RunReport(f"r{index}", "g", {}, 0)
        report.models.append({"event": "model_loaded", "model": "m [cpu, float32]", "seconds": 3.0, "bytes": 1})
        reports.append(report)
    outcomes = [RunOutcome(i, {}, "ok", 9.0, report=report) for i, report in enumerate(reports)]
    data = sweep_report("g", outcomes, 9.5, "local")
    assert data["models"] == [{"event": "model_loaded", "model": "m [cpu, float32]", "seconds": 3.0, "bytes": 1}]
    assert [run["seconds"] for run in data["runs"]] == [0.0, 0.0]  # loads are not run time


def test_identical_errors_of_many_runs_are_printed_once_with_their_runs(tmp_path, capsys):
    code = main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path),
                 "--sweep", "prompt=\u200b", "--sweep", "seed=0..2"])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    # Run 0's call failed; runs 1 and 2 shared that call and are reported together.
    assert len(errors) == 2 and errors[0].startswith("error: run 0 failed:")
    assert errors[1].startswith("error: runs 1, 2 failed:")


def test_sweep_file_names_carry_the_run_index_never_a_counter_suffix(tmp_path, capsys):
    code = main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path), "--sweep", "style=plain,bold",
                 "--sweep", "seed=0..1", "--json"])
    assert code == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    names = [Path(run["files"][0]).name for run in runs]
    assert names == ["prompt-card-r000-0-0.png", "prompt-card-r001-1-0.png", "prompt-card-r002-0-0.png",
                     "prompt-card-r003-1-0.png"]
    # A single run keeps the plain name.
    assert main(["run", str(REPO / "graphs" / "prompt-card.json"), "--out", str(tmp_path / "one"), "--json"]) == 0
    assert [Path(p).name for p in json.loads(capsys.readouterr().out)["files"]] == ["prompt-card-0-0.png"]


def test_ray_and_accelerate_are_in_the_default_install():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for requirement in project["dependencies"]}
    assert {"ray", "accelerate"} <= names  # `--executor ray` and quiet, low-memory diffusers loading
    assert "ray" not in project.get("optional-dependencies", {})


def test_local_sweep_progress_counts_node_calls_as_the_runs_advance_together(registry, tmp_path):
    from sfumato.cli.progress import SweepProgress

    builder_graph = Graph.from_dict({"version": 1, "params": {"b": {"type": "float", "default": 0}}, "nodes": {
        "n": {"type": "test.number", "inputs": {"value": 2.0}},
        "a": {"type": "test.add", "inputs": {"a": {"from": "n.value"}, "b": {"param": "b"}}}},
        "outputs": {"y": "a.value"}})
    progress = SweepProgress(3)
    Engine(registry, output_dir=tmp_path, observers=[progress]).run_many(builder_graph, [{"b": b} for b in (1, 2, 3)])
    runs, nodes = progress.progress.tasks
    assert (runs.completed, runs.total) == (3, 3)
    assert (nodes.completed, nodes.total) == (6, 6)
