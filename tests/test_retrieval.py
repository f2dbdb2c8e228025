"""Retrieval and fusion: indexes, incremental re-indexing, precision, FAISS parity, encoder checks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from sfumato import Engine, GraphBuilder, NodeExecutionError
from sfumato.cli import main
from sfumato_zoo.dataset import ShapeSpec, all_specs, render

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory):
    """Two images of every attribute combination, with sidecar captions."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = random.Random(1)
    for spec in all_specs():
        for copy in range(2):
            name = f"{spec.colour}-{spec.shape}-{spec.background}-{copy}"
            render(spec, rng, 32).save(folder / f"{name}.png")
            (folder / f"{name}.txt").write_text(spec.caption("a {colour} {shape} on a {background} background"))
    return folder


@pytest.fixture(scope="module")
def index(captioned_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "idx"
    assert main(["index", "build", str(captioned_folder), "--out", str(out)]) == 0
    return out


def query(index, text, k=6, **extra):
    builder = GraphBuilder("q")
    node = builder.add("retrieve.query", "q", index=str(index), texts=[text], k=k, **extra)
    builder.output("r", node["retrieved"])
    return Engine(device="cpu").run(builder.build())["r"]


def test_index_is_safetensors_plus_json(index):
    meta = json.loads((index / "index.json").read_text())
    assert (meta["model"], meta["dimension"], len(meta["items"])) == ("all-MiniLM-L6-v2", 384, 102)
    assert (index / "vectors.safetensors").exists()


def test_red_circle_queries_rank_matching_images_first(index):
    queries = {"a red circle": ("red", "circle"), "a blue square": ("blue", "square"),
               "a yellow triangle": ("yellow", "triangle"), "a green circle": ("green", "circle")}
    precisions = []
    for text, (colour, shape) in queries.items():
        hits = query(index, text, k=4).hits[0]
        precisions.append(np.mean([colour in h.caption and shape in h.caption for h in hits]))
    # 6 matching images exist per query (3 backgrounds x 2 copies); precision@4 should be near 1.
    assert np.mean(precisions) >= 0.9, precisions


def test_reindexing_embeds_only_what_changed(captioned_folder, index, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(captioned_folder, copy)
    out = tmp_path / "idx"
    main(["index", "build", str(copy), "--out", str(out)])
    capsys.readouterr()
    (copy / "red-circle-black-0.txt").write_text("a scarlet circle on a black background")
    main(["index", "build", str(copy), "--out", str(out)])
    assert "(1 embedded" in capsys.readouterr().out


def test_manifest_csv_and_json(tmp_path):
    from sfumato_retrieval.index import collect_captioned_images

    render(ShapeSpec("circle", "red", "black"), random.Random(0)).save(tmp_path / "a.png")
    (tmp_path / "manifest.csv").write_text("path,caption\na.png,a red circle\n")
    assert collect_captioned_images(tmp_path)[0][1] == "a red circle"
    (tmp_path / "manifest.json").write_text(json.dumps([{"path": "a.png"}]))
    with pytest.raises(ValueError, match="needs 'path' and 'caption'"):
        collect_captioned_images(tmp_path)


def test_threshold_drops_weak_hits(index):
    hits = query(index, "a red circle", k=50, threshold=0.75).hits[0]
    assert hits and all(h.score >= 0.75 for h in hits)


def test_faiss_gives_identical_results():
    pytest.importorskip("faiss")
    shipped = REPO / "examples" / "reference-index"  # 51 distinct captions: no ties
    exact = query(shipped, "a purple square", k=10).hits[0]
    fast = query(shipped, "a purple square", k=10, backend="faiss").hits[0]
    assert [h.path for h in exact] == [h.path for h in fast]
    assert np.allclose([h.score for h in exact], [h.score for h in fast], atol=1e-5)


def test_query_from_another_encoder_is_refused(index, tmp_path):
    from tiny_models import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    builder = GraphBuilder("q")
    embedding = builder.add("encode.sentence", "e", texts=["a red circle"], model=str(clip))
    node = builder.add("retrieve.query", "q", index=str(index), embedding=embedding["embedding"])
    builder.output("r", node["retrieved"])
    with pytest.raises(NodeExecutionError, match="built with 'all-MiniLM-L6-v2'"):
        Engine(device="cpu").run(builder.build())


def test_cli_query_json(index, capsys):
    assert main(["index", "query", str(index), "a white square on a gray background", "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [set(h) for h in hits] == [{"caption", "path", "score"}] * 2
    assert "white square" in hits[0]["caption"]


def test_index_from_images_made_by_a_graph(tmp_path):
    builder = GraphBuilder("g")
    red = builder.add("zoo.render", "red", colour="red", shape="circle", count=2)
    blue = builder.add("zoo.render", "blue", colour="blue", shape="square", background="white", count=2, seed=1)
    both = builder.add("image.concat", "both", first=red["images"], second=blue["images"])
    builder.add("retrieve.add_images", "add", images=both["images"], index=str(tmp_path / "idx"))
    Engine(device="cpu").run(builder.build())
    hits = query(tmp_path / "idx", "a blue square", k=1).hits[0]
    assert "blue square" in hits[0].caption and Path(hits[0].path).exists()


def test_retrieve_graph_runs(tmp_path):
    from sfumato import Graph

    result = Engine(device="cpu", output_dir=tmp_path).run(
        Graph.load(REPO / "graphs" / "retrieve.json"), prompt="a green triangle",
        index=str(REPO / "examples" / "reference-index"))
    assert all("green triangle" in caption for caption in result["captions"][:3])
    assert len(result.report.files) == 1


def test_fusion_mix_concat_and_reference(index):
    builder = GraphBuilder("fuse")
    prompt = builder.add("encode.text", "p", texts="a red circle")
    refs = builder.add("encode.text", "r", texts=["a blue square", "a green square"])
    mixed = builder.add("fuse.mix", "m", conditioning=prompt["conditioning"], reference=refs["conditioning"], weight=0.5)
    joined = builder.add("fuse.concat", "c", conditioning=prompt["conditioning"], reference=refs["conditioning"])
    hits = builder.add("retrieve.query", "q", index=str(index), texts=["a red circle"])
    ref = builder.add("fuse.reference_image", "ref", retrieved=hits["retrieved"])
    for name, handle, output in (("mixed", mixed, "conditioning"), ("joined", joined, "conditioning"),
                                 ("prompt", prompt, "conditioning"), ("ref", ref, "images")):
        builder.output(name, handle[output])
    result = Engine(device="cpu").run(builder.build())
    assert np.allclose(np.linalg.norm(result["mixed"].pooled.numpy(), axis=1), 1.0, atol=1e-5)
    assert not np.allclose(result["mixed"].pooled.numpy(), result["prompt"].pooled.numpy())
    assert result["joined"].sequence_length == 2
    assert "red circle" in result["ref"].labels[0]


def test_mixing_conditioning_from_different_encoders_is_refused(tmp_path):
    from tiny_models import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    builder = GraphBuilder("bad")
    a = builder.add("encode.text", "a", texts="a red circle")
    b = builder.add("encode.text", "b", texts="a red circle", model=str(clip), max_length=16)
    mixed = builder.add("fuse.mix", "m", conditioning=a["conditioning"], reference=b["conditioning"])
    builder.output("m", mixed["conditioning"])
    with pytest.raises(NodeExecutionError, match="same model"):
        Engine(device="cpu").run(builder.build())


def _small_captioned_folder(folder: Path, count: int = 3) -> Path:
    from PIL import Image

    folder.mkdir()
    for number in range(count):
        Image.new("RGB", (8, 8), (number * 60, 0, 0)).save(folder / f"{number}.png")
        (folder / f"{number}.txt").write_text(f"a red square number {number}")
    return folder


def test_index_build_reports_progress_while_embedding(tmp_path):
    from sfumato import NodeProgress

    events = []
    builder = GraphBuilder("build")
    builder.add("retrieve.build", "build", folder=str(_small_captioned_folder(tmp_path / "imgs")),
                index=str(tmp_path / "idx"))
    Engine(device="cpu", observers=[events.append]).run(builder.build())
    progress = [(e.message, e.current, e.total) for e in events if isinstance(e, NodeProgress)]
    assert ("reading images", 3, 3) in progress and ("embedding captions", 3, 3) in progress


def test_index_build_command_shows_progress(tmp_path, capsys):
    folder = _small_captioned_folder(tmp_path / "imgs")
    assert main(["index", "build", str(folder), "--out", str(tmp_path / "idx")]) == 0
    captured = capsys.readouterr()
    assert "embedding captions" in captured.err and "3/3" in captured.err
    assert "indexed 3 images" in captured.out


def test_a_huge_folder_is_not_walked_whole_to_fingerprint_it(tmp_path, monkeypatch):
    from sfumato_retrieval import nodes

    folder = _small_captioned_folder(tmp_path / "imgs", count=4)
    monkeypatch.setattr(nodes, "MAX_FINGERPRINT_ENTRIES", 5)
    first, second = (nodes._folder_fingerprint({"folder": str(folder)}) for _ in range(2))
    assert first.startswith("too-many-files:") and first != second  # never served stale from the cache
    monkeypatch.setattr(nodes, "MAX_FINGERPRINT_ENTRIES", 100)
    assert nodes._folder_fingerprint({"folder": str(folder)}) == nodes._folder_fingerprint({"folder": str(folder)})


def test_reference_image_reads_its_hit_through_the_path_policy(tmp_path):
    from PIL import Image

    import sfumato
    import sfumato.testing as st
    from sfumato import PathNotAllowedError, PathPolicy, Retrieved, RetrievedItem

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(outside / "hit.png")
    retrieved = Retrieved(((RetrievedItem(str(outside / "hit.png"), "a red square", 0.9),),))
    registry = sfumato.Registry.load()
    node = registry.nodes["fuse.reference_image"]
    allowed = st.make_context(node, registry=registry, path_policy=PathPolicy.confined(read=[outside]))
    assert st.call_node(node, retrieved=retrieved, context=allowed)["images"].labels == ("a red square",)
    confined = st.make_context(node, registry=registry, path_policy=PathPolicy.confined(read=[tmp_path / "data"]))
    with pytest.raises(PathNotAllowedError, match="hit.png"):
        st.call_node(node, retrieved=retrieved, context=confined)
