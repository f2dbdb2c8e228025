"""The encoding pack: the shipped sentence encoder, CLIP/T5/causal-LM code paths on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest

from sfumato import Engine, Graph, GraphBuilder, GraphValidationError, ModelNotFoundError
from tiny_models import save_tiny_causal_lm, save_tiny_clip, save_tiny_t5


def run_node(engine, node_type, output, **inputs):
    builder = GraphBuilder("t")
    node = builder.add(node_type, "n", **inputs)
    builder.output("out", node[output])
    return engine.run(builder.build())


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(device="cpu", output_dir=tmp_path_factory.mktemp("out"))  # never the repository's out/


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"clip": save_tiny_clip(root / "clip"), "t5": save_tiny_t5(root / "t5"),
            "lm": save_tiny_causal_lm(root / "lm")}


def test_default_sentence_encoder_matches_sentence_transformers_recipe(engine):
    embedding = run_node(engine, "encode.sentence", "embedding",
                         texts=["a red circle", "a crimson round disc", "a blue square"])["out"]
    assert (embedding.model, embedding.dimension, embedding.vectors.shape) == ("all-MiniLM-L6-v2", 384, (3, 384))
    assert np.allclose(np.linalg.norm(embedding.vectors, axis=1), 1.0, atol=1e-5)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from sfumato_transformers.sentence import bundled_minilm_path

    reference = sentence_transformers.SentenceTransformer(str(bundled_minilm_path()), device="cpu").encode(
        ["a red circle", "a crimson round disc", "a blue square"], normalize_embeddings=True)
    assert np.allclose(embedding.vectors, reference, atol=1e-4)


def test_batched_encoding_equals_one_by_one(engine):
    texts = ["a red circle", "a blue square on white", "yellow"]
    batched = run_node(engine, "encode.sentence", "embedding", texts=texts)["out"].vectors
    single = np.concatenate([run_node(Engine(device="cpu"), "encode.sentence", "embedding", texts=[t])["out"].vectors
                             for t in texts])
    assert np.allclose(batched, single, atol=1e-5)


def test_sentence_conditioning_is_one_token_and_empty_prompt_is_zero(engine):
    conditioning = run_node(engine, "encode.text", "conditioning", texts=["a red circle", ""])["out"]
    assert tuple(conditioning.states.shape) == (2, 1, 384) and conditioning.sequence_length == 1
    assert float(conditioning.states[1].abs().sum()) == 0.0


def test_prompt_weights_change_the_sentence_embedding(engine):
    builder = GraphBuilder("w")
    weights = builder.add("text.weights", "w", text="a (red:2.0) circle on a black background")
    plain = builder.add("encode.text", "plain", texts=weights["text"])
    weighted = builder.add("encode.text", "weighted", texts=weights["text"], weights=weights["weights"])
    builder.output("plain", plain["conditioning"])
    builder.output("weighted", weighted["conditioning"])
    result = engine.run(builder.build())
    assert not np.allclose(result["plain"].pooled.numpy(), result["weighted"].pooled.numpy())


def test_clip_last_and_penultimate_with_pooled(engine, tiny_folder):
    last = run_node(engine, "encode.text", "conditioning", texts=["a red circle"], model=str(tiny_folder["clip"]),
                    max_length=16)["out"]
    penultimate = run_node(engine, "encode.text", "conditioning", texts=["a red circle"],
                           model=str(tiny_folder["clip"]), hidden_layer="penultimate", max_length=16)["out"]
    assert tuple(last.states.shape) == (1, 16, 32) and last.width == 32 and last.pooled.shape[-1] == 32
    assert not np.allclose(last.states.numpy(), penultimate.states.numpy())


def test_t5_conditioning_records_encoder_and_width(engine, tiny_folder):
    result = run_node(engine, "encode.text", "conditioning", texts=["a cat", "a big red dog"],
                      model=str(tiny_folder["t5"]))["out"]
    assert result.encoder == str(tiny_folder["t5"]) and result.width == 16 and result.states.shape[0] == 2


def test_token_weights_scale_clip_states(engine, tiny_folder):
    from sfumato_text.weighting import parse_weighted_prompt

    builder = GraphBuilder("w")
    w = builder.add("text.weights", "w", text="a (red:1.5) circle")
    plain = builder.add("encode.text", "p", texts=w["text"], model=str(tiny_folder["clip"]), max_length=16)
    weighted = builder.add("encode.text", "q", texts=w["text"], weights=w["weights"], model=str(tiny_folder["clip"]),
                           max_length=16)
    builder.output("p", plain["conditioning"])
    builder.output("q", weighted["conditioning"])
    result = engine.run(builder.build())
    difference = (result["p"].states - result["q"].states).abs().sum(-1)[0]
    assert parse_weighted_prompt("a (red:1.5) circle").phrases[1] == ("red", 1.5)
    assert float(difference.max()) > 0


def test_prompt_expansion_is_deterministic_per_seed(engine, tiny_folder):
    kwargs = {"prompt": "a red circle", "model": str(tiny_folder["lm"]), "max_new_tokens": 6, "temperature": 1.0}
    first = run_node(engine, "text.expand", "text", seed=1, **kwargs)["out"]
    again = run_node(Engine(device="cpu"), "text.expand", "text", seed=1, **kwargs)["out"]
    assert first == again and first.startswith("a red circle")


def test_missing_model_path_says_where_it_looked(engine, tmp_path):
    from sfumato import SfumatoError

    with pytest.raises(SfumatoError) as error:  # found at validation, before anything loads
        run_node(engine, "encode.text", "conditioning", texts=["x"], model=str(tmp_path / "nowhere"))
    assert isinstance(error.value, GraphValidationError) or isinstance(error.value.original, ModelNotFoundError)
    assert str(tmp_path / "nowhere") in str(error.value) and "all-MiniLM-L6-v2" in str(error.value)


def test_a_sweep_over_seeds_encodes_each_prompt_once(engine):
    graph = Graph.from_dict({"version": 1, "params": {"seed": {"type": "int", "default": 0}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": "a red circle"}},
        "card": {"type": "image.text_card", "inputs": {"text": "x", "width": 16, "height": 16}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}, "template": "{seed}.png"}}},
        "outputs": {"c": "enc.conditioning"}})
    statuses = [engine.run(graph, seed=s, output_dir=None).report.nodes["enc"].status for s in range(3)]
    assert statuses[1:] == ["cached", "cached"]
