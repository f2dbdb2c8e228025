"""Untrusted input answered with a clear error: resource limits, and crafted PNG metadata.

Issue 13, items 8 (limits) and 10 (PNG metadata is untrusted input).
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sfumato import (
    Graph,
    GraphValidationError,
    ImageBatch,
    LimitExceededError,
    Limits,
    MetadataError,
    ParameterError,
    current_limits,
    limits_scope,
    read_png_metadata,
    set_limits,
    validate_graph,
)
from sfumato.cli import main
from sfumato.run.sweeps import combine, parse_axis
from sfumato_imaging.geometry import pad, resize, upscale
from sfumato_imaging.sheets import grid

SMALL = Limits(max_image_pixels=100 * 100, max_batch_pixels=3 * 100 * 100, max_text_length=1000, max_sweep_runs=10)


def images(count: int, size: tuple[int, int] = (64, 64)) -> ImageBatch:
    return ImageBatch(tuple(Image.new("RGB", size) for _ in range(count)))


# -- limits ----------------------------------------------------------------------------------


def test_server_limits_are_tighter_than_the_command_line_defaults():
    cli, server = Limits(), Limits.for_server()
    assert server.max_image_pixels < cli.max_image_pixels
    assert server.max_batch_pixels < cli.max_batch_pixels
    assert server.max_text_length < cli.max_text_length
    assert server.max_sweep_runs < cli.max_sweep_runs


def test_set_limits_changes_the_limits_of_the_process():
    previous = set_limits(SMALL)
    try:
        assert current_limits() is SMALL
    finally:
        set_limits(previous)
    assert current_limits() is previous


def test_resize_over_the_pixel_limit_is_a_validation_issue_naming_the_node(registry):
    graph = Graph.from_dict({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "x"}},
        "big": {"type": "image.resize", "inputs": {"images": {"from": "card.images"}, "width": 16384,
                                                   "height": 16384}}}})
    [issue] = validate_graph(graph, registry)
    assert issue.node == "big" and "16384x16384" in issue.message and "Limits.max_image_pixels" in issue.message


def test_tighter_limits_refuse_at_validation_what_the_defaults_allow(registry):
    graph = Graph.from_dict({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "x", "width": 50, "height": 50}},
        "r": {"type": "image.resize", "inputs": {"images": {"from": "card.images"}, "width": 200, "height": 200}}}})
    assert validate_graph(graph, registry) == []
    with limits_scope(SMALL):
        [issue] = validate_graph(graph, registry)
    assert issue.node == "r" and "40,000 pixels" in issue.message


def test_upscale_over_the_pixel_limit_is_refused_before_allocating():
    with limits_scope(SMALL), pytest.raises(LimitExceededError, match="image.upscale factor 2"):
        upscale(images(1, (64, 64)), factor=2.0)


def test_batch_over_the_batch_pixel_limit_is_refused():
    with limits_scope(SMALL), pytest.raises(LimitExceededError, match="4 images of 40,000 pixels together"):
        resize(images(4), width=100, height=100)


def test_pad_over_the_pixel_limit_is_refused():
    with limits_scope(SMALL), pytest.raises(LimitExceededError, match="image.pad: a 64x164 image"):
        pad(images(1), top=100)


def test_grid_over_the_pixel_limit_is_refused():
    with limits_scope(SMALL), pytest.raises(LimitExceededError, match="image.grid of 4 images"):
        grid(images(4), cell=256)


def test_sweep_range_over_the_limit_is_refused_without_building_it():
    tracemalloc.start()
    try:
        with pytest.raises(ParameterError, match="20,000,001 runs, more than the limit of 100,000"):
            parse_axis("seed=0..20000000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 20 million values would take over a gigabyte


def test_crossed_sweep_over_the_limit_is_refused_from_its_axis_lengths():
    with limits_scope(SMALL), pytest.raises(ParameterError, match=r"the sweep \(4 x 3\) makes 12 runs"):
        combine([parse_axis("seed=0..3"), parse_axis("p=a,b,c")])


def test_run_refused_by_a_node_over_the_limits_exits_2(tmp_path, capsys):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "x", "width": 4096, "height": 4096}},
        "up": {"type": "image.upscale", "inputs": {"images": {"from": "card.images"}, "factor": 16}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "up.images"}}}}}))
    assert main(["run", str(graph), "--out", str(tmp_path / "out")]) == 2
    assert "Limits.max_image_pixels" in capsys.readouterr().err


# -- PNG metadata ------------------------------------------------------------------------------


def png_with(tmp_path: Path, text: str, name: str = "crafted.png") -> Path:
    info = PngInfo()
    info.add_itxt("sfumato", text, zip=True)
    path = tmp_path / name
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


GOOD_GRAPH = {"version": 1, "nodes": {"t": {"type": "text.value", "inputs": {"text": "hi"}}}}


@pytest.mark.parametrize("field, value, says", [
    ("graph", "not a graph", "'graph' must be a graph object"),
    ("params", ["a", "list"], "'params' must be an object"),
    ("seed", "7", "'seed' must be an integer"),
    ("seed", True, "'seed' must be an integer"),
    ("index", -1, "'index' must not be negative"),
    ("versions", {"torch": 2}, "the values of 'versions' must be strings"),
])
def test_metadata_field_of_the_wrong_type_is_a_metadata_error(tmp_path, field, value, says):
    path = png_with(tmp_path, json.dumps({"graph": GOOD_GRAPH, field: value}))
    with pytest.raises(MetadataError, match=says):
        read_png_metadata(path)


def test_metadata_with_a_damaged_stored_graph_is_a_metadata_error(tmp_path):
    path = png_with(tmp_path, json.dumps({"graph": {"version": 1, "nodes": {"a": 5}}}))
    with pytest.raises(MetadataError, match="the stored graph is not a valid graph"):
        read_png_metadata(path)


def test_metadata_nested_deeply_is_a_metadata_error(tmp_path):
    path = png_with(tmp_path, '{"graph": ' + json.dumps(GOOD_GRAPH) + ', "params": {"p": '
                    + "[" * 3000 + "]" * 3000 + "}}")
    with pytest.raises(MetadataError, match="nested too deeply"):
        read_png_metadata(path)


def test_metadata_with_a_lone_surrogate_is_a_metadata_error(tmp_path):
    path = png_with(tmp_path, '{"graph": ' + json.dumps(GOOD_GRAPH) + ', "node": "\\udc80"}')
    with pytest.raises(MetadataError, match="surrogate"):
        read_png_metadata(path)


def test_metadata_chunk_too_large_is_a_metadata_error(tmp_path):
    path = png_with(tmp_path, json.dumps({"graph": GOOD_GRAPH, "params": {"p": "x" * (2 * 2**20)}}))
    with pytest.raises(MetadataError, match="cannot read it as a PNG"):
        read_png_metadata(path)


def test_file_that_is_not_a_png_is_a_metadata_error(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(MetadataError, match="cannot read it as a PNG"):
        read_png_metadata(path)


def test_inspect_of_crafted_metadata_exits_2_with_the_reason(tmp_path, capsys):
    path = png_with(tmp_path, json.dumps({"graph": {"version": 1, "name": 5, "nodes": 7}, "params": 3}))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the sfumato metadata is damaged" in err and "Traceback" not in err


def test_run_of_a_png_with_crafted_metadata_exits_2(tmp_path, capsys):
    path = png_with(tmp_path, json.dumps({"graph": GOOD_GRAPH, "seed": 10**30}))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "64 bits" in capsys.readouterr().err


def test_validate_of_a_png_with_crafted_metadata_exits_2(tmp_path, capsys):
    path = png_with(tmp_path, json.dumps({"graph": GOOD_GRAPH, "params": {"p": [1, [2, {"x": float("inf")}]]}}))
    assert main(["validate", str(path), "--json"]) == 2
    [issue] = json.loads(capsys.readouterr().out)["issues"]
    assert "params.p[1][1].x" in issue["message"]


def test_metadata_that_sfumato_wrote_reads_back(tmp_path, registry):
    from sfumato import Engine

    graph = Graph.from_dict({"version": 1, "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "hi", "width": 32, "height": 32}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}}}}})
    result = Engine(registry, device="cpu", output_dir=tmp_path).run(graph, seed=3)
    data = read_png_metadata(result.report.files[0])
    assert data["seed"] == 3 and data["graph"]["nodes"]["card"]["type"] == "image.text_card"


def test_metadata_graph_with_an_unknown_node_type_reads_and_fails_when_planned(tmp_path, registry):
    path = png_with(tmp_path, json.dumps({"graph": {"version": 1, "nodes": {"a": {"type": "no.such"}}}}))
    data = read_png_metadata(path)  # structure is fine; the node type is checked when run
    with pytest.raises(GraphValidationError):
        from sfumato import plan_run

        plan_run(Graph.from_dict(data["graph"]), registry)
