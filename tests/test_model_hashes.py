"""PNG metadata records the models a run used with the SHA-256 of their files; re-runs say when they changed."""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import pytest
from tiny_models import save_tiny_zoo_diffusion

from sfumato import Engine, Graph, GraphBuilder, Registry, RunContext, hookimpl, model_hash, node, read_png_metadata
from sfumato.cli import main
from sfumato.store import hashes


@pytest.fixture(autouse=True)
def hash_index(tmp_path, monkeypatch):
    """Each test keeps its file-hash index in its own folder, starting empty."""
    monkeypatch.setenv(hashes.ENV_INDEX, str(tmp_path / "index" / "file-hashes.json"))
    hashes.forget_hashes()
    yield tmp_path / "index" / "file-hashes.json"
    hashes.forget_hashes()


@pytest.fixture(scope="module")
def zoo_model(tmp_path_factory):
    return save_tiny_zoo_diffusion(tmp_path_factory.mktemp("hashed") / "model")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generator_graph(model: Path) -> dict:
    return {"version": 1, "name": "gen", "params": {"seed": {"type": "int", "default": 0}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": "a red circle"}},
        "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"}, "model": str(model),
                                                     "steps": 2, "seed": {"param": "seed"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}}}


def test_png_metadata_records_a_zoo_model_with_the_sha256_of_its_files(zoo_model, tmp_path):
    result = Engine(device="cpu", output_dir=tmp_path / "out").run(Graph.from_dict(generator_graph(zoo_model)))
    [path] = result.report.files
    recorded = read_png_metadata(path)["models"][str(zoo_model)]
    files = sorted(p for p in zoo_model.rglob("*") if p.is_file())
    assert recorded["files"] == {p.relative_to(zoo_model).as_posix(): sha256_of(p) for p in files}
    assert recorded["files"]["unet/diffusion_pytorch_model.safetensors"] == sha256_of(
        zoo_model / "unet" / "diffusion_pytorch_model.safetensors")
    combined = hashlib.sha256("".join(f"{p.relative_to(zoo_model).as_posix()}\0{sha256_of(p)}\n"
                                      for p in files).encode()).hexdigest()
    assert recorded["sha256"] == combined and recorded["path"] == str(zoo_model)
    # The text encoder the graph's encode.text uses by default is recorded too.
    assert len(read_png_metadata(path)["models"]["all-MiniLM-L6-v2"]["sha256"]) == 64


def test_inspect_prints_each_model_with_its_sha256(zoo_model, tmp_path, capsys):
    result = Engine(device="cpu", output_dir=tmp_path / "out").run(Graph.from_dict(generator_graph(zoo_model)))
    [path] = result.report.files
    assert main(["inspect", path]) == 0
    assert f"model {zoo_model}: sha256 {model_hash(zoo_model).sha256}" in capsys.readouterr().out


def test_a_single_file_model_records_the_sha256_of_the_file(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"weights")
    assert model_hash(file).sha256 == hashlib.sha256(b"weights").hexdigest() and model_hash(file).files == {}


def test_a_png_whose_generator_came_from_the_cache_still_records_its_model(zoo_model, tmp_path):
    engine = Engine(device="cpu")
    graph = Graph.from_dict(generator_graph(zoo_model))
    engine.run(graph, output_dir=tmp_path / "first")
    second = engine.run(graph, output_dir=tmp_path / "second")  # only image.save runs again
    assert second.report.nodes["gen"].status.value == "cached"
    [path] = second.report.files
    assert read_png_metadata(path)["models"][str(zoo_model)]["sha256"] == model_hash(zoo_model).sha256


@node("hashtest.weights", category="test", output="value")
def weights_reader(weights: str, context: RunContext) -> float:
    """Reads a model named by an input that is not called ``model``."""
    return float(context.models.resolve(weights).stat().st_size)


@node("hashtest.image", category="test", output="images")
def one_image(value: float) -> object:
    """A 4x4 image."""
    from PIL import Image

    from sfumato import ImageBatch

    return ImageBatch((Image.new("RGB", (4, 4), (int(value) % 256, 0, 0)),))


def test_a_model_a_node_resolves_by_another_input_is_recorded_from_the_run(tmp_path):
    plugin = types.ModuleType("hashtest")
    plugin.sfumato_node_types = hookimpl(lambda: [weights_reader, one_image])  # type: ignore[attr-defined]
    weights = tmp_path / "style.safetensors"
    weights.write_bytes(b"a lora, say")
    builder = GraphBuilder("g")
    value = builder.add("hashtest.weights", "read", weights=str(weights))
    image = builder.add("hashtest.image", "img", value=value["value"])
    builder.add("image.save", "save", images=image["images"])
    engine = Engine(Registry.load(plugins=[plugin]), device="cpu", output_dir=tmp_path / "out", cache=False)
    [path] = engine.run(builder.build()).report.files
    assert read_png_metadata(path)["models"] == {
        str(weights): {"path": str(weights), "sha256": hashlib.sha256(b"a lora, say").hexdigest()}}


def test_a_file_is_hashed_once_per_version_and_remembered_across_processes(tmp_path, hash_index):
    file = tmp_path / "big.safetensors"
    file.write_bytes(b"one")
    assert hashes.file_sha256(file) == hashlib.sha256(b"one").hexdigest()
    index = json.loads(hash_index.read_text())
    [stamp] = index
    # Another process finds the hash in the index: prove it is read, not recomputed, with a planted value.
    hash_index.write_text(json.dumps({stamp: "f" * 64}))
    hashes.forget_hashes()
    assert hashes.file_sha256(file) == "f" * 64
    file.write_bytes(b"three")  # a new size (and time): a new version, hashed again
    assert hashes.file_sha256(file) == hashlib.sha256(b"three").hexdigest()


def test_library_models_record_the_hash_the_library_lists(tmp_path, monkeypatch):
    from sfumato_diffusers.library import scan

    library = tmp_path / "library"
    library.mkdir()
    save_tiny_zoo_diffusion(library / "zoo")
    [entry] = scan([library], hash_new=True)
    assert entry.sha256 == model_hash(library / "zoo").sha256


def test_the_library_lists_remembered_hashes_without_reading_new_files(tmp_path, hash_index):
    from sfumato_diffusers.library import scan

    library = tmp_path / "library"
    save_tiny_zoo_diffusion(library / "zoo")
    [entry] = scan([library])
    assert entry.sha256 == "" and hashes.remembered_model_hash(library / "zoo") is None
    assert not hash_index.exists()  # nothing was read to list it
    expected = model_hash(library / "zoo").sha256  # hashed once, e.g. by a run that used it
    hashes.forget_hashes()  # another process: the index on disk is all it knows
    [entry] = scan([library])
    assert entry.sha256 == expected


def test_metadata_differences_name_a_model_whose_files_changed():
    from sfumato.run.metadata import metadata_differences

    made = {"models": {"m": {"path": "/m", "sha256": "a" * 64, "files": {"unet/w.safetensors": "1" * 64,
                                                                          "vae/w.safetensors": "2" * 64}},
                       "gone": {"path": "/g", "sha256": "c" * 64}}}
    remade = {"models": {"m": {"path": "/m", "sha256": "b" * 64, "files": {"unet/w.safetensors": "3" * 64,
                                                                            "vae/w.safetensors": "2" * 64}}}}
    assert metadata_differences(made, remade) == [
        "model gone: sha256 cccccccccccc then, not used now",
        "model m: sha256 aaaaaaaaaaaa then, sha256 bbbbbbbbbbbb now (unet/w.safetensors differ)"]
    assert metadata_differences({"models": made["models"]}, {"models": made["models"]}) == []


@pytest.mark.slow
def test_rerun_and_check_of_a_png_report_a_model_whose_weights_changed(zoo_model, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(zoo_model, model)
    (tmp_path / "g.json").write_text(json.dumps(generator_graph(model)))
    assert main(["run", str(tmp_path / "g.json"), "--out", str(tmp_path / "a"), "--device", "cpu", "--json"]) == 0
    [made] = json.loads(capsys.readouterr().out)["files"]
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({k: v + 0.01 * torch.ones_like(v) for k, v in load_file(weights).items()}, weights)
    assert main(["run", made, "--out", str(tmp_path / "b"), "--device", "cpu", "--json"]) == 0
    err = capsys.readouterr().err
    assert f"model '{model}' has other weights now" in err
    assert main(["run", made, "--check", "--device", "cpu", "--json"]) == 1
    differences = json.loads(capsys.readouterr().out)["differences"]
    assert any(line.startswith(f"model {model}: sha256 ") and "(vae/diffusion_pytorch_model.safetensors differ)"
               in line for line in differences)


def test_damaged_model_records_in_png_metadata_are_refused():
    from sfumato import MetadataError
    from sfumato.run.metadata import check_metadata

    graph = {"version": 1, "nodes": {}}
    for models in ({"m": "abc"}, {"m": {"sha256": 5}}, {"m": {"sha256": "a", "files": ["x"]}},
                   {"m": {"sha256": "a", "files": {"unet/w": 1}}}):
        with pytest.raises(MetadataError, match="'models' must map model names"):
            check_metadata({"graph": graph, "models": models})
    assert check_metadata({"graph": graph, "models": {"m": {"path": "/m", "sha256": "a", "files": {"w": "b"}}}})


def test_the_safetensors_files_a_graph_reads_are_among_the_models_it_names():
    from sfumato import default_registry
    from sfumato.run.metadata import graph_model_names

    document = {"version": 1, "params": {"style": {"type": "str", "default": "/loras/style.safetensors"}}, "nodes": {
        "a": {"type": "diffusion.lora", "inputs": {"path": {"param": "style"}}},
        "b": {"type": "diffusion.lora", "inputs": {"path": "/loras/other.safetensors"}},
        "c": {"type": "image.load", "inputs": {"path": "/images/photo.png"}},  # read, but no weights
        "d": {"type": "diffusion.generate", "inputs": {"model": "my-model"}}}}
    assert graph_model_names(document, {}, default_registry()) == [
        "/loras/style.safetensors", "/loras/other.safetensors", "my-model"]
