"""sfumato.testing: what a plugin author's tests use."""

from __future__ import annotations

import types

import pytest
from PIL import Image

import sfumato
import sfumato.testing as st
from sfumato.testing import sfumato_context, sfumato_engine  # noqa: F401 - fixtures


@sfumato.node("kit.seeded", category="test", cache=sfumato.CachePolicy.reads_context("seed"))
def seeded(offset: int, context: sfumato.RunContext) -> int:
    """Adds the run seed to ``offset``."""
    context.progress(1, 1, "done")
    return context.seed + offset


@sfumato.node("kit.pair", category="test", outputs={"low": int, "high": int})
def pair(value: int = 3) -> dict[str, int]:
    """Two outputs."""
    return {"low": value - 1, "high": value + 1}


kit_plugin = types.ModuleType("kit_plugin")
kit_plugin.sfumato_node_types = sfumato.hookimpl(lambda: [seeded, pair])  # type: ignore[attr-defined]


def test_call_node_passes_a_context_with_the_given_seed():
    events: list[dict] = []
    context = st.make_context(seeded, seed=40, events=events)
    [value] = st.call_node(seeded, offset=2, context=context).values()
    assert value == 42
    assert events[0]["event"] == "progress" and events[0]["message"] == "done"


def test_call_node_returns_every_output_by_name():
    assert st.call_node(pair, value=10) == {"low": 9, "high": 11}


def test_call_node_applies_defaults_and_validates_literals():
    assert st.call_node(pair) == {"low": 2, "high": 4}
    with pytest.raises(sfumato.ParameterError, match="value"):
        st.call_node(pair, value="not a number")


def test_call_node_refuses_an_unknown_input():
    with pytest.raises(TypeError, match="no input"):
        st.call_node(pair, colour=1)


def test_plugin_registry_holds_only_the_given_plugin():
    registry = st.plugin_registry(kit_plugin)
    assert set(registry.nodes) == {"kit.seeded", "kit.pair"}


def test_make_engine_runs_a_graph_over_just_the_given_plugin(tmp_path):
    engine = st.make_engine(kit_plugin, output_dir=tmp_path)
    builder = sfumato.GraphBuilder("kit")
    node = builder.add("kit.pair", value=5)
    builder.output("high", node["high"])
    assert engine.run(builder.build())["high"] == 6


def test_engine_fixture_writes_into_tmp_path(sfumato_engine, tmp_path):
    assert sfumato_engine.output_dir == tmp_path
    builder = sfumato.GraphBuilder("card")
    card = builder.add("image.text_card", text="hi", width=32, height=32)
    builder.output("images", card["images"])
    [image] = sfumato_engine.run(builder.build())["images"].images
    assert isinstance(image, Image.Image)


def test_context_fixture_is_on_the_cpu(sfumato_context):
    assert sfumato_context.device == "cpu"


@sfumato.node("kit.sneaky", category="test")
def sneaky(context: sfumato.RunContext) -> int:
    """Reads the seed without declaring it."""
    return context.seed


def test_context_for_a_node_refuses_an_undeclared_read_as_a_run_would():
    with pytest.raises(sfumato.SfumatoError, match="context_keys"):
        st.call_node(sneaky, context=st.make_context(sneaky))
