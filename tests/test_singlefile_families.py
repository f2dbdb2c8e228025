"""Single-file SDXL, SD3 and Flux checkpoints: tiny random models saved in the layout model sites hand out,
their family detected from the keys, loaded with the configs of a library folder (no hub), run for two steps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tiny_models import save_single_file, save_tiny_flux_pipeline, save_tiny_sd3_pipeline, save_tiny_sdxl_pipeline

from sfumato import Engine, GraphBuilder, SfumatoError, default_registry, validate_graph

BUILDERS = {"sdxl": save_tiny_sdxl_pipeline, "sd3": lambda folder: save_tiny_sd3_pipeline(folder, num_layers=2),
            "flux": save_tiny_flux_pipeline}
DENOISER = {"sdxl": "unet", "sd3": "transformer", "flux": "transformer"}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A library with a diffusers folder of each family (the configs) and, per family, a single file
    made from another model of that family (other weights), so the tests see the file's weights are used."""
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("single-families")
    expected = {}
    for family, build in BUILDERS.items():
        build(root / "library" / f"{family}-base")
        other = build(root / "build" / family)
        weights = other / DENOISER[family] / "diffusion_pytorch_model.safetensors"
        torch.manual_seed(7)
        save_file({k: v + 0.05 * torch.randn_like(v) for k, v in load_file(weights).items()}, weights)
        if family == "sdxl":  # a fine-tune whose CLIP-G was trained too: the file's encoder must be the one used
            encoder = other / "text_encoder_2" / "model.safetensors"
            save_file({k: v + 0.05 * torch.randn_like(v) for k, v in load_file(encoder).items()}, encoder)
            expected["sdxl-clip-g"] = load_file(encoder)
        save_single_file(other, root / "library" / "checkpoints" / f"{family}-finetune.safetensors", family)
        expected[family] = load_file(weights)
    shutil.rmtree(root / "build")  # the library holds the base folders and the single files only
    return root / "library", expected


@pytest.fixture
def engine(library, monkeypatch):
    monkeypatch.setenv("SFUMATO_MODELS", str(library[0]))
    return Engine(device="cpu", cache=False)


def graph(family, root, **inputs):
    """``encode.<family>`` of the library's folder (the encoders) -> the family's generator with the single file."""
    builder = GraphBuilder(f"{family}-single")
    encode = builder.add(f"encode.{family}", "enc", texts="a red circle", model=str(root / f"{family}-base"))
    generator = {"sdxl": "diffusion.generate", "sd3": "sd3.generate", "flux": "flux.generate"}[family]
    gen = builder.add(generator, "gen", conditioning=encode["conditioning"],
                      **{"model": str(root / "checkpoints" / f"{family}-finetune.safetensors"), "steps": 2,
                         "guidance": 1.0, **inputs})
    builder.output("images", gen["images"])
    return builder.build()


def loaded_denoiser(engine, family):
    [(key, device, dtype)] = [k for k in engine.models.loaded() if "finetune" in k[0]]
    model = engine.models.get(key, device, dtype, lambda: None)
    return model.unet if family == "sdxl" else model.pipeline.transformer


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_single_file_checkpoint_loads_with_the_library_configs_and_runs_two_steps(engine, library, family):
    root, expected = library
    size = {"width": 16, "height": 16} if family != "sdxl" else {}
    images = engine.run(graph(family, root, **size))["images"].images
    assert images[0].size == (16, 16) and np.asarray(images[0]).std() > 0
    state = loaded_denoiser(engine, family).state_dict()
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in expected[family].items())


@pytest.mark.parametrize(("family", "kind"), [("sdxl", "checkpoint"), ("sd3", "checkpoint"), ("flux", "checkpoint")])
def test_the_family_of_a_single_file_is_detected_from_its_keys(library, family, kind):
    from sfumato_diffusers.library import scan

    entries = {entry.name: entry for entry in scan([library[0]])}
    entry = entries[f"{family}-finetune"]
    assert (entry.kind, entry.family) == (kind, family)


def test_a_single_file_of_another_family_is_refused_at_validation_naming_what_it_is(library):
    root, _ = library
    builder = GraphBuilder("bad")
    encode = builder.add("encode.sd3", "enc", texts="a red circle", model=str(root / "sd3-base"))
    builder.add("sd3.generate", "gen", conditioning=encode["conditioning"], guidance=1.0,
                model=str(root / "checkpoints" / "flux-finetune.safetensors"))
    [issue] = validate_graph(builder.build(), default_registry())
    assert issue.path == "nodes.gen.inputs.model"
    assert "is a flux checkpoint, not a sd3 checkpoint that sd3.generate loads (generate with flux.generate)" \
        in issue.message
    builder = GraphBuilder("bad")
    builder.add("diffusion.generate", "gen", prompt="a red circle",
                model=str(root / "checkpoints" / "sd3-finetune.safetensors"))
    [issue] = validate_graph(builder.build(), default_registry())
    assert "(generate with sd3.generate)" in issue.message


def test_a_single_file_whose_keys_name_no_family_is_refused_with_a_clear_error(engine, tmp_path):
    import torch
    from safetensors.torch import save_file

    odd = tmp_path / "mystery.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, odd)
    builder = GraphBuilder("g")
    encode = builder.add("encode.flux", "enc", texts="a red circle", model="x")
    builder.add("flux.generate", "gen", conditioning=encode["conditioning"], model=str(odd))
    issues = [issue for issue in validate_graph(builder.build(), default_registry()) if issue.node == "gen"]
    assert [issue.path for issue in issues] == ["nodes.gen.inputs.model"]
    assert "cannot tell what model this is from its keys (first: encoder.layer.0.weight)" in issues[0].message


def test_a_single_flux_file_without_a_flux_folder_in_the_library_says_what_to_add(library, monkeypatch, tmp_path):
    root, _ = library
    monkeypatch.setenv("SFUMATO_MODELS", str(tmp_path))
    with pytest.raises(SfumatoError, match="single-file flux checkpoint.*diffusers flux folder in the model library"):
        Engine(device="cpu", cache=False).run(graph("flux", root, width=16, height=16))


def test_flux_conversion_gives_diffusers_own_result_at_flux1_width():
    """sfumato converts Flux files itself (diffusers 0.42 fixes the width at 3072); at FLUX.1's
    width both give the same tensors, checked on a file of FLUX.1's row counts with tiny columns."""
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from sfumato_diffusers.checkpoints import flux_checkpoint_to_diffusers

    torch.manual_seed(0)
    inner, mlp = 3072, 4 * 3072
    rows = {"time_in.in_layer": inner, "time_in.out_layer": inner, "vector_in.in_layer": inner,
            "vector_in.out_layer": inner, "guidance_in.in_layer": inner, "guidance_in.out_layer": inner,
            "txt_in": inner, "img_in": inner, "final_layer.linear": 64, "final_layer.adaLN_modulation.1": 2 * inner}
    for stream in ("img", "txt"):
        rows |= {f"double_blocks.0.{stream}_mod.lin": 6 * inner, f"double_blocks.0.{stream}_attn.qkv": 3 * inner,
                 f"double_blocks.0.{stream}_attn.proj": inner, f"double_blocks.0.{stream}_mlp.0": mlp,
                 f"double_blocks.0.{stream}_mlp.2": inner}
    rows |= {"single_blocks.0.modulation.lin": 3 * inner, "single_blocks.0.linear1": 3 * inner + mlp,
             "single_blocks.0.linear2": inner}
    checkpoint = {}
    for name, count in rows.items():
        checkpoint[f"{name}.weight"] = torch.randn(count, 2)
        checkpoint[f"{name}.bias"] = torch.randn(count)
    for name in ("double_blocks.0.img_attn", "double_blocks.0.txt_attn", "single_blocks.0"):
        for norm in ("query_norm", "key_norm"):
            checkpoint[f"{name}.norm.{norm}.scale"] = torch.randn(128)
    ours = flux_checkpoint_to_diffusers(dict(checkpoint), inner)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(checkpoint))
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_generate_image_dispatches_a_single_sd3_or_flux_file_to_its_generator(engine, library, family):
    root, _ = library
    builder = GraphBuilder("g")
    encode = builder.add(f"encode.{family}", "enc", texts="a red circle", model=str(root / f"{family}-base"))
    gen = builder.add("generate.image", "gen", conditioning=encode["conditioning"], steps=2, guidance=1.0,
                      model=str(root / "checkpoints" / f"{family}-finetune.safetensors"))
    builder.output("images", gen["images"])
    assert len(engine.run(builder.build())["images"]) == 1


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_library_single_file_is_encoded_with_its_family_folder_tokenizers_and_generates(library, monkeypatch,
                                                                                        family):
    from sfumato import Registry

    root, expected = library
    monkeypatch.setenv("SFUMATO_MODELS", str(root))
    engine = Engine(Registry.load(), device="cpu", cache=False)  # the library's models are model sources
    file = str(root / "checkpoints" / f"{family}-finetune.safetensors")
    builder = GraphBuilder("one-model")
    encode = builder.add(f"encode.{family}", "enc", texts="a red circle", model=file)
    gen = builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=file, steps=2, guidance=1.0)
    builder.output("images", gen["images"])
    assert len(engine.run(builder.build())["images"]) == 1
    if family == "sdxl":  # SDXL files carry their (maybe fine-tuned) text encoders: those are used
        [(key, device, dtype)] = [k for k in engine.models.loaded() if k[0].endswith("#sdxl-encoders")]
        clip_g = engine.models.get(key, device, dtype, lambda: None).models[1].state_dict()
        assert all(np.array_equal(clip_g[k].numpy(), v.numpy()) for k, v in expected["sdxl-clip-g"].items())


def test_a_single_file_outside_the_library_given_to_an_encoder_says_what_it_takes(library, tmp_path):
    root, _ = library
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(root / "checkpoints" / "sd3-finetune.safetensors", outside)
    builder = GraphBuilder("g")
    encode = builder.add("encode.sd3", "enc", texts="a red circle", model=str(outside))
    builder.output("c", encode["conditioning"])
    with pytest.raises(SfumatoError, match="single file outside the model library: encode.sd3 takes a diffusers sd3 "
                                           "pipeline folder, or a single sd3 checkpoint of the model library"):
        Engine(device="cpu", cache=False).run(builder.build())


@pytest.mark.parametrize(("family", "suffix"), [("flux", ".gguf"), ("sdxl", ".ckpt")])
def test_a_checkpoint_that_is_not_safetensors_is_refused_saying_what_sfumato_loads(engine, library, tmp_path,
                                                                                 family, suffix):
    root, _ = library
    other = tmp_path / f"model{suffix}"
    other.write_bytes(b"not read")
    with pytest.raises(SfumatoError, match=rf"is a \{suffix} file: sfumato loads single-file checkpoints from "
                                           r"\.safetensors only"):
        engine.run(graph(family, root, model=str(other)))


@pytest.mark.parametrize(("family", "width"), [("sdxl", 64), ("sd3", 32), ("flux", 32)])
def test_conditioning_of_another_width_into_a_single_file_is_refused_at_validation(library, family, width,
                                                                                   tmp_path):
    """The width a file's denoiser attends to comes from its header (no weights read, no config folder)."""
    from tiny_models import save_tiny_clip

    root, _ = library
    builder = GraphBuilder("bad")
    encode = builder.add("encode.text", "enc", texts="a red circle", model=str(save_tiny_clip(tmp_path / "clip", 8)),
                         max_length=16)
    generator = {"sdxl": "diffusion.generate", "sd3": "sd3.generate", "flux": "flux.generate"}[family]
    builder.add(generator, "gen", conditioning=encode["conditioning"], guidance=1.0,
                model=str(root / "checkpoints" / f"{family}-finetune.safetensors"))
    [issue] = validate_graph(builder.build(), default_registry())
    assert issue.path == "nodes.gen.inputs.conditioning" and f"width=8 (needs {width})" in issue.message


def test_an_sd3_file_with_its_text_encoders_is_encoded_with_the_file_s_own(tmp_path, monkeypatch):
    """As sd3_medium_incl_clips_t5xxl: CLIP-L, CLIP-G and T5 under text_encoders. (CLIP-L with the identity
    projection diffusers gives it); fine-tuned encoders in the file are the ones that encode."""
    import torch
    from safetensors.torch import load_file, save_file

    from sfumato import Registry

    library = tmp_path / "library"
    save_tiny_sd3_pipeline(library / "sd3-base", projection_dim=16)
    other = save_tiny_sd3_pipeline(tmp_path / "other", projection_dim=16)
    torch.manual_seed(5)
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        weights = other / part / "model.safetensors"
        tuned = {k: v + 0.05 * torch.randn_like(v) for k, v in load_file(weights).items()}
        if part == "text_encoder":
            tuned["text_projection.weight"] = torch.eye(16)
        save_file(tuned, weights)
    save_single_file(other, library / "sd3-incl-encoders.safetensors", "sd3", encoders=True)
    monkeypatch.setenv("SFUMATO_MODELS", str(library))
    engine = Engine(Registry.load(), device="cpu", cache=False)
    file = str(library / "sd3-incl-encoders.safetensors")
    builder = GraphBuilder("sd3-file")
    encode = builder.add("encode.sd3", "enc", texts="a red circle", model=file)
    gen = builder.add("sd3.generate", "gen", conditioning=encode["conditioning"], model=file, steps=2, guidance=1.0)
    builder.output("images", gen["images"])
    assert len(engine.run(builder.build())["images"]) == 1
    [(key, device, dtype)] = [k for k in engine.models.loaded() if k[0].endswith("#sd3-encoders")]
    encoders = engine.models.get(key, device, dtype, lambda: None).encoders
    for (_, model), part in zip(encoders, ("text_encoder", "text_encoder_2", "text_encoder_3")):
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in load_file(other / part / "model.safetensors").items())
