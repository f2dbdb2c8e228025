"""The model library: folders of diffusers models and single files, listed with family, kind and SHA-256."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from sfumato import Engine, GraphBuilder, Registry, SfumatoError, validate_graph
from sfumato.cli.main import main
from sfumato.store import hashes
from sfumato_diffusers.singlefile import detect
from tiny_models import save_tiny_sd_pipeline, save_tiny_sdxl_pipeline


def save(path, named_shapes: dict[str, tuple[int, ...]]):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: np.zeros(shape, dtype=np.float32) for name, shape in named_shapes.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    save_tiny_sd_pipeline(root / "checkpoints" / "sd-tiny")
    save_tiny_sdxl_pipeline(root / "checkpoints" / "sdxl-tiny")
    save(root / "loras" / "kohya-style.safetensors", {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4)})
    save(root / "loras" / "xl-style.safetensors", {
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)})
    save(root / "ip-adapter.safetensors", {"image_proj.proj.weight": (3072, 1024),
                                           "ip_adapter.1.to_k_ip.weight": (320, 768)})
    save(root / "control" / "canny.safetensors", {"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
                                                  "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
                                                  ".weight": (320, 768)})
    save(root / "notes.safetensors", {"something.else": (2,)})
    return root


@pytest.fixture()
def fresh_registry(monkeypatch, tmp_path):
    """Each test loads plugins again (the library is read when they load), with its own hash index."""
    import sfumato.registry as registry_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SFUMATO_MODELS", raising=False)
    monkeypatch.delenv("SFUMATO_LIBRARY_HASH", raising=False)
    monkeypatch.setattr(registry_module, "_default", None)
    hashes.forget_hashes()  # what an earlier test hashed in this process is not known to this test's index
    yield registry_module
    hashes.forget_hashes()


def listed(capsys, *args: str) -> dict[str, dict]:
    assert main(["models", *args, "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_models_scan_lists_folders_single_files_and_adapters_with_family_kind_and_sha256(library, fresh_registry,
                                                                                       capsys):
    rows = listed(capsys, "scan", "--models", str(library))
    kinds = {name: (rows[name]["kind"], rows[name]["family"]) for name in
             ("sd-tiny", "sdxl-tiny", "kohya-style", "xl-style", "ip-adapter", "canny")}
    assert kinds == {"sd-tiny": ("pipeline", "sd"), "sdxl-tiny": ("pipeline", "sdxl"), "kohya-style": ("lora", "sd"),
                     "xl-style": ("lora", "sdxl"), "ip-adapter": ("ip-adapter", "sd"), "canny": ("controlnet", "sd")}
    file = library / "loras" / "kohya-style.safetensors"
    assert rows["kohya-style"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert len(rows["sd-tiny"]["sha256"]) == 64 and rows["sd-tiny"]["plugin"] == "diffusers"
    assert "notes" not in rows  # a file that is no model sfumato knows is not a model source


def test_models_list_shows_no_hash_until_a_scan_has_computed_it(library, fresh_registry, capsys, monkeypatch):
    assert listed(capsys, "--models", str(library))["sd-tiny"]["sha256"] == ""
    monkeypatch.setattr(fresh_registry, "_default", None)
    listed(capsys, "scan", "--models", str(library))
    monkeypatch.delenv("SFUMATO_LIBRARY_HASH")
    monkeypatch.setenv("SFUMATO_MODELS", "")
    monkeypatch.setattr(fresh_registry, "_default", None)
    assert len(listed(capsys, "list", "--models", str(library))["sd-tiny"]["sha256"]) == 64  # from the index


def test_models_show_finds_a_model_by_name_path_or_hash_and_refuses_an_unknown_one(library, fresh_registry, capsys):
    rows = listed(capsys, "scan", "--models", str(library))
    sha = rows["sdxl-tiny"]["sha256"]
    for name in ("sdxl-tiny", rows["sdxl-tiny"]["path"], sha[:12], f"sha256:{sha}"):
        assert main(["models", "show", name, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["path"] == rows["sdxl-tiny"]["path"]
    assert main(["models", "show", "no-such-model"]) == 2
    assert "no model 'no-such-model'" in capsys.readouterr().err


def test_a_graph_names_a_library_model_by_name_or_by_hash(library, fresh_registry, monkeypatch):
    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    monkeypatch.setenv("SFUMATO_LIBRARY_HASH", "1")
    registry = Registry.load()
    source = registry.models["sd-tiny"]
    assert source.family == "sd" and f"sha256:{source.sha256[:10]}" in registry.models
    engine = Engine(registry, device="cpu", cache=False)
    for name in ("sd-tiny", f"sha256:{source.sha256[:10]}"):
        builder = GraphBuilder("g")
        gen = builder.add("diffusion.generate", "gen", prompt="a red circle", model=name, steps=2)
        builder.output("images", gen["images"])
        assert len(engine.run(builder.build())["images"]) == 1


def test_validation_knows_library_models_and_refuses_sd_conditioning_for_a_library_sdxl_model(
        library, fresh_registry, monkeypatch):
    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    registry = Registry.load()
    builder = GraphBuilder("bad")
    encode = builder.add("encode.text", "enc", texts="a red circle", model=str(library / "checkpoints" / "sd-tiny" /
                                                                              "text_encoder"), max_length=16)
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model="sdxl-tiny")
    [issue] = validate_graph(builder.build(), registry)
    assert "family='sd' (needs 'sdxl')" in issue.message


def test_a_missing_library_folder_is_a_clear_error_of_models(fresh_registry, tmp_path, capsys):
    assert main(["models", "--models", str(tmp_path / "nowhere")]) == 0  # other sources still list
    from sfumato_diffusers.library import library_folders, scan

    with pytest.raises(SfumatoError, match="does not exist"):
        scan(library_folders([str(tmp_path / "nowhere")]))


@pytest.mark.parametrize(("keys", "expected"), [
    ({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}, ("checkpoint", "sd")),
    ({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)},
     ("checkpoint", "sd2")),
    ({"model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
      "conditioner.embedders.1.model.ln_final.weight": (1280,)}, ("checkpoint", "sdxl")),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (4608, 1536)}, ("checkpoint", "sd3")),
    ({"double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, ("checkpoint", "flux")),
    ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 3072)}, ("lora", "flux")),
    ({"conv_in.weight": (320, 4, 3, 3), "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
      "add_embedding.linear_1.weight": (1280, 2816)}, ("unet", "sdxl")),
])
def test_the_family_of_a_single_file_is_detected_from_its_keys(keys, expected):
    header = {name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 0]} for name, shape in keys.items()}
    found = detect(header)
    assert (found.kind, found.family) == expected


def test_a_file_of_unknown_keys_is_refused_with_the_keys_it_has(tmp_path):
    from sfumato_diffusers.singlefile import detect_file

    path = save(tmp_path / "mystery.safetensors", {"encoder.weight": (2,), "decoder.weight": (2,)})
    with pytest.raises(SfumatoError, match="cannot tell what model this is.*decoder.weight, encoder.weight"):
        detect_file(path)
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(SfumatoError, match="not a readable .safetensors file"):
        detect_file(tmp_path / "broken.safetensors")


@pytest.mark.slow
def test_the_server_model_list_that_the_page_pickers_use_shows_library_models(library, fresh_registry, monkeypatch,
                                                                              tmp_path):
    from test_server import Server

    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    server = Server(tmp_path / "data").start()
    try:
        _, models = server.request("GET", "/api/models")
    finally:
        server.stop()
    listed = {model["name"]: model for model in models}
    assert listed["sdxl-tiny"]["kind"] == "pipeline" and "sdxl" in listed["sdxl-tiny"]["description"]
    assert listed["kohya-style"]["kind"] == "lora"
