"""A model that asks for its own sampling settings (an LCM-distilled one) warns when sampled otherwise."""

from __future__ import annotations

from typing import Any

import pytest

import sfumato
from sfumato import GraphBuilder, Registry, validate_graph


@pytest.fixture(scope="module")
def installed() -> Registry:
    return sfumato.default_registry()


def _graph(node_type: str, **inputs: Any) -> sfumato.Graph:
    builder = GraphBuilder("lcm")
    encode = builder.add("encode.text", "enc", texts="a red circle on a black background")
    builder.add(node_type, "gen", conditioning=encode["conditioning"], model="tiny-shapes-lcm", **inputs)
    return builder.build()


@pytest.mark.parametrize("node_type", ["diffusion.generate", "generate.image"])
def test_an_lcm_model_sampled_with_the_default_sampler_is_a_warning_naming_its_own_settings(installed, node_type):
    graph = _graph(node_type)
    assert validate_graph(graph, installed) == []  # a warning, not an error: the run goes ahead
    [warning] = validate_graph(graph, installed, warnings=True)
    assert warning.node == "gen" and warning.severity == "warning"
    assert "scheduler=lcm steps=2 guidance=1.0" in warning.message
    assert "--set scheduler=lcm" in warning.message


def test_an_lcm_model_sampled_with_its_own_settings_gives_no_warning(installed):
    graph = _graph("diffusion.generate", scheduler="lcm", steps=2, guidance=1.0)
    assert validate_graph(graph, installed, warnings=True) == []


def test_a_speed_recipe_that_chooses_the_sampler_gives_no_warning(installed):
    graph = _graph("diffusion.generate", speed={"sampler": "lcm", "steps": 2}, guidance=1.0)
    assert validate_graph(graph, installed, warnings=True) == []


def test_a_model_without_sampling_defaults_gives_no_warning(installed):
    builder = GraphBuilder("plain")
    encode = builder.add("encode.text", "enc", texts="a red circle")
    builder.add("diffusion.generate", "gen", conditioning=encode["conditioning"], model="tiny-shapes-diffusion")
    assert validate_graph(builder.build(), installed, warnings=True) == []


@pytest.mark.parametrize(("settings", "warned"), [
    ({}, True),
    ({"scheduler": "lcm", "steps": 2, "guidance": 1.0}, False),
])
def test_the_text_to_image_graph_takes_an_lcm_model_with_its_own_settings(installed, settings, warned):
    plan = sfumato.plan_run(sfumato.find_graph("text-to-image", installed), installed,
                            {"model": "tiny-shapes-lcm", **settings})
    assert any("made to sample with scheduler=lcm" in warning.message for warning in plan.warnings) is warned
