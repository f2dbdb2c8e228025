"""A keep_going run whose one branch failed keeps, in its report, the outputs of the branches that finished."""

from __future__ import annotations

import pytest

from sfumato import Engine, Graph, RunFailedError


def test_a_failed_keep_going_runs_report_keeps_the_finished_branches_outputs(tmp_path):
    graph = Graph.from_dict({"version": 1, "name": "two", "nodes": {
        "good": {"type": "text.normalize", "inputs": {"text": "  fine  text "}},
        "count": {"type": "text.template", "inputs": {"template": "{subject} words", "subject": {"from": "good.text"}}},
        "bad": {"type": "text.template", "inputs": {"template": "{missing}"}}},
        "outputs": {"good": "good.text", "count": "count.text", "bad": "bad.text"}})
    with pytest.raises(RunFailedError) as failed:
        Engine(device="cpu").run(graph, keep_going=True, output_dir=tmp_path)
    assert failed.value.report.outputs == {"good": "fine text", "count": "fine text words"}
    assert failed.value.report.as_dict()["outputs"] == {"good": "fine text", "count": "fine text words"}
