"""The disk cache gives values back with their types; plugins register codecs for their own types."""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import pytest

import sfumato
from sfumato import Engine, GraphBuilder, PromptWeights, ValueCodec, node
from sfumato.store.cache import DiskCache

CALLS: list[str] = []


def roundtrip(tmp_path, value, codecs=None):
    cache = DiskCache(tmp_path / "cache", codecs=codecs)
    assert cache.put("ab" * 20, {"value": value})
    return DiskCache(tmp_path / "cache", codecs=codecs).get("ab" * 20)["value"]


def test_prompt_weights_come_back_hashable_with_tuple_phrases(tmp_path):
    weights = PromptWeights("a red cat", (("a ", 1.0), ("red", 1.3), (" cat", 1.0)))
    back = roundtrip(tmp_path, weights)
    assert back == weights and type(back.phrases) is tuple and type(back.phrases[1]) is tuple
    assert hash(back) == hash(weights)  # encode.text keys on it: 'unhashable type: list' before


def test_tuples_lists_and_dicts_keep_their_types(tmp_path):
    value = {"pair": (1, "a"), "list": [1, 2], "nested": [(1.5, None), {"t": ()}], "empty": (), "bool": True}
    back = roundtrip(tmp_path, value)
    assert back == value
    assert type(back["pair"]) is tuple and type(back["nested"][0]) is tuple and type(back["nested"][1]["t"]) is tuple
    assert type(back["list"]) is list


def test_a_str_subclass_is_not_stored_as_a_plain_str(tmp_path):
    class Name(str):
        pass

    cache = DiskCache(tmp_path / "cache")
    assert not cache.put("cd" * 20, {"value": Name("x")})  # kept in memory only, never retyped


@dataclass(frozen=True)
class Mask:
    """A plugin's own value type."""

    pixels: object
    label: str
    box: tuple[int, int, int, int]


@node("masks.make", category="test", output="mask")
def make_mask(size: int = 3) -> Mask:
    CALLS.append("make")
    return Mask(np.ones((size, size), dtype=np.uint8), "square", (0, 0, size, size))


@node("masks.area", category="test", output="value")
def area(mask: Mask) -> int:
    CALLS.append("area")
    return int(mask.pixels.sum())


def _mask_plugin(name: str = "masks", codecs: bool = True) -> types.ModuleType:
    module = types.ModuleType(name)
    module.sfumato_port_types = sfumato.hookimpl(lambda: [sfumato.PortType("Mask", Mask)])  # type: ignore[attr-defined]
    module.sfumato_node_types = sfumato.hookimpl(lambda: [make_mask, area])  # type: ignore[attr-defined]
    if codecs:
        module.sfumato_value_codecs = sfumato.hookimpl(  # type: ignore[attr-defined]
            lambda: [ValueCodec.for_dataclass(Mask, "masks.Mask")])
    return module


def _mask_graph():
    builder = GraphBuilder("masks")
    mask = builder.add("masks.make", "make", size=4)
    builder.output("mask", mask["mask"])
    return builder.build()


def test_a_plugin_codec_stores_its_values_on_disk_across_engines(tmp_path):
    registry = sfumato.Registry.load(entry_points=False, plugins=[_mask_plugin()])
    assert "masks.Mask" in registry.codecs
    CALLS.clear()
    Engine(registry, cache_dir=tmp_path / "cache").run(_mask_graph())
    fresh = Engine(registry, cache_dir=tmp_path / "cache")  # a new process would start like this
    result = fresh.run(_mask_graph())
    assert CALLS == ["make"] and result.report.nodes["make"].status == "cached"
    mask = result["mask"]
    assert type(mask) is Mask and mask.box == (0, 0, 4, 4) and mask.pixels.dtype == np.uint8
    assert int(mask.pixels.sum()) == 16


def test_without_a_codec_a_plugin_value_stays_in_memory_only(tmp_path):
    registry = sfumato.Registry.load(entry_points=False, plugins=[_mask_plugin(codecs=False)])
    CALLS.clear()
    Engine(registry, cache_dir=tmp_path / "cache").run(_mask_graph())
    Engine(registry, cache_dir=tmp_path / "cache").run(_mask_graph())
    assert CALLS == ["make", "make"]


def test_an_entry_whose_codec_is_gone_is_recomputed(tmp_path):
    with_codec = sfumato.Registry.load(entry_points=False, plugins=[_mask_plugin()])
    Engine(with_codec, cache_dir=tmp_path / "cache").run(_mask_graph())
    cache = DiskCache(tmp_path / "cache")  # no codecs registered
    signature = Engine(with_codec).plan(_mask_graph()).nodes["make"].signature
    assert cache.get(signature) is None and cache.discarded == [signature]


def test_a_codec_claimed_by_two_plugins_is_unavailable_and_both_are_reported():
    first, second = _mask_plugin("masks_a"), types.ModuleType("masks_b")
    second.sfumato_value_codecs = sfumato.hookimpl(  # type: ignore[attr-defined]
        lambda: [ValueCodec.for_dataclass(Mask, "masks.Mask")])
    registry = sfumato.Registry.load(entry_points=False, plugins=[first, second])
    assert "masks.Mask" not in registry.codecs
    assert "'masks_b'" in registry.plugins["masks_a"].error and "'masks_a'" in registry.plugins["masks_b"].error
    assert "masks.make" in registry.nodes  # the rest of the plugin stays


def test_for_dataclass_refuses_a_plain_class():
    with pytest.raises(TypeError):
        ValueCodec.for_dataclass(int)


def test_entries_from_the_old_format_that_lost_tuples_are_recomputed(tmp_path):
    import json

    weights = PromptWeights("a cat", (("a cat", 1.0),))
    cache = DiskCache(tmp_path / "cache")
    assert cache.put("12" * 20, {"weights": weights})
    manifest_path = tmp_path / "cache" / "12" / ("12" * 20) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 1  # as written before tuples kept their type
    manifest_path.write_text(json.dumps(manifest))
    assert cache.get("12" * 20) is None and cache.discarded == ["12" * 20]


@pytest.mark.slow
def test_encode_text_runs_on_prompt_weights_from_the_disk_cache(tmp_path):
    """The reported failure: weights cached by one process, encoded by the next ('unhashable type: list')."""
    def graph(encode: bool):
        builder = GraphBuilder("weights")
        parsed = builder.add("text.weights", "w", text="a (red:1.3) circle")
        builder.output("weights", parsed["weights"])
        if encode:
            encoded = builder.add("encode.text", "e", texts=parsed["text"], weights=parsed["weights"])
            builder.output("conditioning", encoded["conditioning"])
        return builder.build()

    Engine(device="cpu", cache_dir=tmp_path / "cache").run(graph(encode=False))
    result = Engine(device="cpu", cache_dir=tmp_path / "cache").run(graph(encode=True))
    assert result.report.nodes["w"].status == "cached" and result.report.nodes["e"].status == "ran"
    assert isinstance(result["weights"].phrases, tuple)
