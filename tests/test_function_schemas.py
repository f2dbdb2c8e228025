"""A graph function's JSON Schemas and parameter checks (what ``sfumato serve`` publishes for each graph)."""

from __future__ import annotations

from typing import Any

import pytest

from sfumato import Graph, ImageBatch, load_function
from sfumato.run.function import json_schema_of

CHOOSE = Graph.from_dict({"version": 1, "name": "choose", "params": {
    "subject": {"type": "str", "description": "what to write"},
    "style": {"type": "str", "default": "plain", "choices": ["plain", "bold"]},
    "sizes": {"type": "list[int]", "default": [1], "minimum": 1, "maximum": 9}}, "nodes": {
    "clean": {"type": "text.normalize", "inputs": {"text": {"param": "subject"}}}},
    "outputs": {"text": "clean.text"}})


def test_a_graph_functions_input_schema_has_each_parameter_its_type_default_choices_and_range():
    schema = load_function(CHOOSE).input_schema
    assert schema["required"] == ["subject"] and schema["additionalProperties"] is False
    assert schema["properties"] == {
        "subject": {"type": "string", "description": "what to write"},
        "style": {"type": "string", "default": "plain", "enum": ["plain", "bold"]},
        "sizes": {"type": "array", "default": [1], "items": {"type": "integer", "minimum": 1, "maximum": 9}}}


def test_a_parameters_range_in_the_schema_is_narrowed_by_the_inputs_it_feeds():
    # text-to-image declares steps 1..200 and feeds generate.image, whose own range is wider.
    steps = load_function("text-to-image").input_schema["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"]) == (1, 200)
    assert isinstance(steps["minimum"], int)


def test_output_schema_gives_json_values_their_type_and_other_values_a_summary():
    schema = load_function("make-images").output_schema["properties"]
    assert schema["images"]["type"] == "string" and schema["images"]["x-sfumato-type"] == "ImageBatch"
    assert schema["fidelity"] == {"type": "number"}
    assert load_function(CHOOSE).output_schema["properties"] == {"text": {"type": "string"}}


@pytest.mark.parametrize(("python_type", "schema"), [
    (int, {"type": "integer"}), (bool, {"type": "boolean"}), (Any, {}),
    (list[str], {"type": "array", "items": {"type": "string"}}),
    (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
    (float | None, {"anyOf": [{"type": "number"}, {"type": "null"}]}),
])
def test_json_schema_of_python_types(python_type, schema):
    assert json_schema_of(python_type) == schema


def test_json_schema_of_a_value_json_cannot_hold_is_its_summary_text():
    assert json_schema_of(ImageBatch)["type"] == "string"
    assert "'<ImageBatch x4>'" in json_schema_of(ImageBatch)["description"]
    assert json_schema_of(list[ImageBatch])["type"] == "string"


def test_parameter_problems_name_each_parameter_and_the_value_given():
    function = load_function(CHOOSE)
    assert function.parameter_problems({"subject": "x"}) == []
    problems = {p["parameter"]: p for p in function.parameter_problems(
        {"style": "italic", "sizes": [3, 12], "extra": True})}
    assert set(problems) == {"subject", "style", "sizes", "extra"}
    assert problems["subject"]["value"] is None and "is required" in problems["subject"]["message"]
    assert "'italic' is not one of" in problems["style"]["message"] and problems["style"]["value"] == "italic"
    assert "12 is above the maximum 9" in problems["sizes"]["message"]
    extra = problems["extra"]["message"]
    assert "unknown parameter 'extra'" in extra and "(given True)" in extra


def test_the_input_schema_accepts_the_defaults_and_refuses_what_the_engine_refuses():
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_function("text-to-image").input_schema
    jsonschema.validate({}, schema)
    jsonschema.validate({"prompt": "a blue square", "steps": 200, "scheduler": "ddim"}, schema)
    for bad in ({"steps": 0}, {"steps": "ten"}, {"scheduler": "fastest"}, {"colour": "red"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        assert load_function("text-to-image").parameter_problems(bad)
