"""Generation on CPU with tiny random models saved to folders and loaded like a user's models."""

from __future__ import annotations

import numpy as np
import pytest

import sfumato
from sfumato import Engine, GraphBuilder, ImageBatch, NodeExecutionError, image_seed, validate_graph
from tiny_models import save_tiny_sd_pipeline, save_tiny_zoo_diffusion, save_tiny_zoo_generator


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"sd": save_tiny_sd_pipeline(root / "sd"), "zoo": save_tiny_zoo_diffusion(root / "zoo"),
            "vae": save_tiny_zoo_generator(root / "vae", "vae"), "gan": save_tiny_zoo_generator(root / "gan", "gan")}


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", cache=False)


def pixels(batch: ImageBatch) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in batch.images])


def sd_generate(engine, model, **inputs):
    builder = GraphBuilder("g")
    node = builder.add("diffusion.generate", "gen", model=str(model), **{"steps": 3, **inputs})
    builder.output("images", node["images"])
    builder.output("latent", node["latent"])
    return engine.run(builder.build())


def zoo_generate(engine, model, prompts, node_type="generate.image", **inputs):
    builder = GraphBuilder("z")
    encode = builder.add("encode.text", "enc", texts=prompts)
    node = builder.add(node_type, "gen", conditioning=encode["conditioning"], model=str(model), **inputs)
    builder.output("images", node["images"])
    return engine.run(builder.build())


def test_sd_folder_generates_from_its_own_text_encoder(engine, models):
    result = sd_generate(engine, models["sd"], prompt="a red circle", batch_size=2)
    assert len(result["images"]) == 2 and result["images"].images[0].size == (16, 16)
    assert tuple(result["latent"].samples.shape) == (2, 4, 8, 8)


def test_same_seed_same_pixels_and_different_seed_different_pixels(engine, models):
    first = pixels(sd_generate(engine, models["sd"], prompt="a red circle", seed=3)["images"])
    again = pixels(sd_generate(engine, models["sd"], prompt="a red circle", seed=3)["images"])
    other = pixels(sd_generate(engine, models["sd"], prompt="a red circle", seed=4)["images"])
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler_a", "dpm++", "unipc", "ddpm", "heun", "dpm++_sde"])
def test_every_scheduler_samples_and_a_batch_equals_single_images(engine, models, scheduler):
    batch = pixels(sd_generate(engine, models["sd"], prompt="a cat", scheduler=scheduler, batch_size=2, seed=7)["images"])
    second = pixels(sd_generate(engine, models["sd"], prompt="a cat", scheduler=scheduler,
                                seed=image_seed(7, 1))["images"])
    assert np.abs(batch[1] - second[0]).max() <= 1


def test_lcm_is_refused_for_a_model_that_is_not_distilled(engine, models):
    with pytest.raises(NodeExecutionError, match="latent-consistency"):
        sd_generate(engine, models["sd"], prompt="a cat", scheduler="lcm")


def _img2img_distance(engine, model, strength):
    builder = GraphBuilder("i2i")
    red = builder.add("zoo.render", "red", colour="red", background="black", size=16)
    target = builder.add("latent.encode", "target", images=red["images"], model=str(model))
    gen = builder.add("diffusion.generate", "gen", model=str(model), prompt="a cat", steps=8, strength=strength,
                      init_images=red["images"], seed=2)
    builder.output("latent", gen["latent"])
    builder.output("target", target["latent"])
    result = engine.run(builder.build())
    return float((result["latent"].samples - result["target"].samples).abs().mean())


def test_image_to_image_stays_closer_to_the_init_image_at_low_strength(engine, models):
    assert _img2img_distance(engine, models["sd"], 0.2) < _img2img_distance(engine, models["sd"], 1.0)


def test_inpainting_keeps_the_unmasked_half(engine, models):
    builder = GraphBuilder("inpaint")
    init = builder.add("zoo.render", "init", colour="yellow", background="gray", shape="square", size=16)
    black = builder.add("image.text_card", "black", text=" ", width=16, height=16, background="#000000")
    top = builder.add("image.crop", "top", images=black["images"], height=8)
    mask = builder.add("image.pad", "mask", images=top["images"], bottom=8, colour="#ffffff")  # repaint bottom half
    target = builder.add("latent.encode", "target", images=init["images"], model=str(models["sd"]))
    gen = builder.add("diffusion.generate", "gen", model=str(models["sd"]), prompt="a cat", steps=4, strength=1.0,
                      init_images=init["images"], mask=mask["images"])
    builder.output("latent", gen["latent"])
    builder.output("target", target["latent"])
    result = engine.run(builder.build())
    difference = (result["latent"].samples - result["target"].samples).abs()[0]
    assert float(difference[:, :3].max()) < 1e-4  # kept: the top half (less the blended border row)
    assert float(difference[:, 4:].mean()) > 0.05  # repainted


def test_vae_encode_decode_round_trip_shapes(engine, models):
    builder = GraphBuilder("latents")
    image = builder.add("zoo.render", "img", size=16)
    encoded = builder.add("latent.encode", "enc", images=image["images"], model=str(models["sd"]))
    decoded = builder.add("latent.decode", "dec", latent=encoded["latent"], model=str(models["sd"]))
    builder.output("latent", encoded["latent"])
    builder.output("images", decoded["images"])
    result = engine.run(builder.build())
    assert tuple(result["latent"].samples.shape) == (1, 4, 8, 8)
    assert result["images"].images[0].size == (16, 16)


def test_zoo_diffusion_vae_and_gan_all_run_through_generate_image(engine, models):
    for name in ("zoo", "vae", "gan"):
        result = zoo_generate(engine, models[name], ["a red circle", "a blue square"], steps=2, batch_size=2, seed=1)
        assert len(result["images"]) == 4
        assert result["images"].labels == ("a red circle",) * 2 + ("a blue square",) * 2


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_vae_and_gan_batches_equal_single_images(engine, models, name):
    batch = pixels(zoo_generate(engine, models[name], ["a red circle"], batch_size=3, seed=5)["images"])
    single = pixels(zoo_generate(engine, models[name], ["a red circle"], batch_size=1, seed=image_seed(5, 2))["images"])
    assert np.abs(batch[2] - single[0]).max() <= 1


def test_conditioning_width_mismatch_is_caught_at_validation(models):
    from sfumato import default_registry

    builder = GraphBuilder("bad")
    encode = builder.add("encode.text", "enc", texts="a red circle")  # MiniLM: 384 wide
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model=str(models["sd"]))
    issues = validate_graph(builder.build(), default_registry())
    [issue] = issues
    assert issue.path == "nodes.gen.inputs.conditioning"
    assert "width=384" in issue.message and "32" in issue.message


def test_encoder_mismatch_names_both_encoders(models, tmp_path):
    from sfumato import default_registry
    from tiny_models import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip384", width=384)
    builder = GraphBuilder("bad")
    encode = builder.add("encode.text", "enc", texts="a red circle", model=str(clip), max_length=16)
    builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=str(models["zoo"]))
    [issue] = validate_graph(builder.build(), default_registry())
    assert "all-MiniLM-L6-v2" in issue.message and str(clip) in issue.message


def test_missing_model_folder_error_says_where_it_looked(engine, tmp_path):
    from sfumato import SfumatoError

    with pytest.raises(SfumatoError) as error:  # found at validation, before anything loads
        sd_generate(engine, tmp_path / "no-such-model", prompt="x")
    assert str(tmp_path / "no-such-model") in str(error.value)
    (tmp_path / "half").mkdir()
    with pytest.raises(NodeExecutionError, match="missing unet, vae, scheduler"):
        sd_generate(engine, tmp_path / "half", prompt="x")


def test_models_load_once_per_process(models):
    events = []
    engine = Engine(device="cpu", cache=False, observers=[events.append])
    for seed in range(3):
        sd_generate(engine, models["sd"], prompt="a dog", seed=seed)
    assert sum(e.kind == "model_loaded" for e in events) == 1


def test_memory_budget_evicts_least_recently_used(models):
    events = []
    engine = Engine(device="cpu", cache=False, observers=[events.append], max_memory={"cpu": 1})
    sd_generate(engine, models["sd"], prompt="a dog")
    zoo_generate(engine, models["gan"], ["a red circle"])
    evicted = [e for e in events if e.kind == "model_evicted"]
    assert evicted and "budget" in evicted[0].reason
    assert len(engine.models.loaded()) == 1


def test_step_progress_events_are_emitted(models):
    events = []
    engine = Engine(device="cpu", cache=False, observers=[events.append])
    sd_generate(engine, models["sd"], prompt="a dog", steps=5)
    steps = [(e.current, e.total) for e in events if e.kind == "node_progress"]
    assert steps == [(i, 5) for i in range(1, 6)]


def _text_to_image_graph(model):
    from sfumato import Graph

    return Graph.from_dict({"version": 1, "params": {
        "prompt": {"type": "str", "default": "a red circle"}, "seed": {"type": "int", "default": 0}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": {"param": "prompt"}}},
        "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"},
                                                     "model": str(model), "steps": 3, "seed": {"param": "seed"}}}},
        "outputs": {"images": "gen.images"}})


def test_sweep_batches_generation_and_matches_one_by_one(models):
    graph = _text_to_image_graph(models["zoo"])
    param_sets = [{"prompt": p, "seed": s} for p in ("a red circle", "a blue square") for s in range(3)]
    events = []
    batched_engine = Engine(device="cpu", cache=False, observers=[events.append])
    batched = batched_engine.run_many(graph, param_sets, batch_size=8)
    assert [o.status for o in batched] == ["ok"] * 6
    # One denoising loop for all six runs: 3 step events, not 18.
    assert sum(e.kind == "node_progress" for e in events) == 3
    single_engine = Engine(device="cpu", cache=False)
    for outcome, params in zip(batched, param_sets):
        alone = single_engine.run(graph, params)["images"]
        assert np.abs(pixels(outcome.outputs["images"]) - pixels(alone)).max() <= 2


def test_model_loads_appear_in_the_run_report(models):
    result = sd_generate(Engine(device="cpu", cache=False), models["sd"], prompt="a dog")
    [entry] = [m for m in result.report.models if m["event"] == "model_loaded"]
    assert str(models["sd"]) in entry["model"] and entry["bytes"] > 0


def test_the_stable_diffusion_graph_runs_a_user_model_folder(models, tmp_path):
    from pathlib import Path

    from sfumato import Graph

    graph = Graph.load(Path(__file__).resolve().parents[1] / "graphs" / "stable-diffusion.json")
    result = Engine(device="cpu", output_dir=tmp_path).run(graph, model=str(models["sd"]), steps=3,
                                                           negative_prompt="a dog")
    [path] = result.report.files
    assert Path(path).exists()


# -- per-image seeds ---------------------------------------------------------------


def test_image_seed_keeps_the_seed_for_the_first_image_and_hashes_the_others():
    assert image_seed(42, 0) == 42
    assert image_seed(42, 1) not in (43, 42) and image_seed(42, 1) == image_seed(42, 1)
    assert len({image_seed(seed, index) for seed in range(64) for index in range(8)}) == 64 * 8


@pytest.mark.parametrize("name", ["zoo", "vae", "gan"])
def test_image_i_of_a_batch_equals_that_image_made_alone_with_its_image_seed(engine, models, name):
    batch = pixels(zoo_generate(engine, models[name], ["a red circle"], steps=2, batch_size=3, seed=11)["images"])
    for index in range(3):
        alone = pixels(zoo_generate(engine, models[name], ["a red circle"], steps=2, batch_size=1,
                                    seed=image_seed(11, index))["images"])
        assert np.abs(batch[index] - alone[0]).max() <= 1


@pytest.mark.parametrize("name", ["zoo", "vae", "gan"])
def test_a_seed_sweep_never_makes_the_same_image_twice(models, name):
    builder = GraphBuilder("seeds")
    seed = builder.param("seed", "int", default=0)
    encode = builder.add("encode.text", "enc", texts=["a red circle"])
    generate = builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=str(models[name]),
                           steps=2, batch_size=4, seed=seed)
    builder.output("images", generate["images"])
    outcomes = Engine(device="cpu", cache=False).run_many(builder.build(), [{"seed": s} for s in range(4)])
    images = [image for outcome in outcomes for image in pixels(outcome.outputs["images"])]
    distinct = {image.tobytes() for image in images}
    assert len(images) == 16 and len(distinct) == 16


# -- vocabulary ---------------------------------------------------------------------

SHAPES_VOCABULARY = {"shapes": ["circle", "square"], "colours": ["red", "blue"], "backgrounds": ["black"]}


@pytest.fixture(scope="module")
def vocabulary_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocabulary")
    return {"zoo": save_tiny_zoo_diffusion(root / "zoo", vocabulary=SHAPES_VOCABULARY),
            "vae": save_tiny_zoo_generator(root / "vae", "vae", vocabulary=SHAPES_VOCABULARY),
            "gan": save_tiny_zoo_generator(root / "gan", "gan", vocabulary=SHAPES_VOCABULARY)}


@pytest.mark.parametrize("name", ["zoo", "vae", "gan"])
def test_a_prompt_outside_the_model_vocabulary_is_refused_with_the_words_it_knows(engine, vocabulary_models, name):
    with pytest.raises(NodeExecutionError) as error:
        zoo_generate(engine, vocabulary_models[name], ["a cat astronaut"], steps=2)
    message = str(error.value)
    assert "'a cat astronaut' is outside the vocabulary" in message and "circle, square" in message


@pytest.mark.parametrize("name", ["zoo", "vae", "gan"])
def test_a_prompt_using_the_model_vocabulary_or_an_empty_one_runs(engine, vocabulary_models, name):
    result = zoo_generate(engine, vocabulary_models[name], ["a crimson circle, highly detailed", ""], steps=2)
    assert len(result["images"]) == 2


def test_the_diffusion_node_checks_the_vocabulary_too(engine, vocabulary_models):
    builder = GraphBuilder("direct")
    encode = builder.add("encode.text", "enc", texts=["a cat astronaut"])
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"],
                model=str(vocabulary_models["zoo"]), steps=2)
    with pytest.raises(NodeExecutionError, match="outside the vocabulary"):
        engine.run(builder.build())


def test_the_shipped_zoo_models_declare_their_vocabulary():
    import json

    from sfumato_zoo import MODELS, WEIGHTS

    for name in MODELS:
        vocabulary = json.loads((WEIGHTS / name / "sfumato.json").read_text())["vocabulary"]
        assert vocabulary["shapes"] == ["circle", "square", "triangle"] and "purple" in vocabulary["colours"]


# -- warnings and timing -----------------------------------------------------------------


def test_a_tiny_diffusion_run_prints_no_warnings(models, tmp_path, capfd, recwarn):
    import json
    import logging

    from sfumato.cli.main import main

    graph = _text_to_image_graph(models["zoo"]).to_dict()
    graph["nodes"]["save"] = {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}
    (tmp_path / "g.json").write_text(json.dumps(graph))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        assert main(["run", str(tmp_path / "g.json"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    finally:
        logging.getLogger().removeHandler(handler)
    err = capfd.readouterr().err
    assert "accelerate" not in err and "warn" not in err.lower(), err
    assert [r.getMessage() for r in records] == []
    # Python shows these categories by default (deprecations inside libraries stay hidden from users).
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    assert [str(w.message) for w in recwarn.list if not issubclass(w.category, hidden)] == []


def test_node_times_leave_out_model_loads_which_are_reported_as_loads(monkeypatch):
    import time as time_module

    now = [1000.0]

    def clock() -> float:
        now[0] += 0.001  # every reading moves the clock a little
        return now[0]

    monkeypatch.setattr(time_module, "perf_counter", clock)

    @sfumato.node("test.loads_a_model", category="test", output="value")
    def loads_a_model(context: sfumato.RunContext) -> float:
        """Load a model that takes 7 (fake) seconds to load, then compute for a moment."""
        def load() -> object:
            now[0] += 7.0
            return object()

        context.models.get("slow-model", "cpu", "float32", load)
        return 1.0

    plugin = type("Plugin", (), {"sfumato_node_types": sfumato.hookimpl(lambda: [loads_a_model])})
    registry = sfumato.Registry.load(plugins=[plugin])
    builder = GraphBuilder("loads")
    builder.output("value", builder.add("test.loads_a_model", "first")["value"])
    result = Engine(registry, device="cpu", cache=False).run(builder.build())
    assert result.report.nodes["first"].seconds < 1.0
    [load] = [entry for entry in result.report.models if entry["event"] == "model_loaded"]
    assert load["seconds"] >= 7.0


def test_finding_a_model_and_its_device_counts_as_its_load_not_as_node_time(monkeypatch):
    import time as time_module

    now = [1000.0]

    def clock() -> float:
        now[0] += 0.001
        return now[0]

    monkeypatch.setattr(time_module, "perf_counter", clock)

    @sfumato.node("test.prepares_then_loads", category="test", output="value")
    def prepares_then_loads(context: sfumato.RunContext) -> float:
        """Take 3 (fake) seconds to find the model and its device (torch's first import), then load it."""
        preparing = time_module.perf_counter()
        now[0] += 3.0
        context.models.get("prepared-model", "cpu", "float32", object, preparing_since=preparing)
        return 1.0

    plugin = type("Plugin", (), {"sfumato_node_types": sfumato.hookimpl(lambda: [prepares_then_loads])})
    builder = GraphBuilder("prepares")
    builder.output("value", builder.add("test.prepares_then_loads", "first")["value"])
    result = Engine(sfumato.Registry.load(plugins=[plugin]), device="cpu", cache=False).run(builder.build())
    assert result.report.nodes["first"].seconds < 1.0
    [load] = [entry for entry in result.report.models if entry["event"] == "model_loaded"]
    assert load["seconds"] >= 3.0
