"""Graphs served as Python functions: sfumato.load_function."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import sfumato

#: Two numbers in, their sum and product out.
ARITHMETIC = {
    "version": 1, "name": "arithmetic", "description": "Sum and scaled sum of two numbers.",
    "params": {"a": {"type": "float"}, "b": {"type": "float", "default": 2.0}, "factor": {"type": "float", "default": 3.0}},
    "nodes": {"x": {"type": "test.number", "inputs": {"value": {"param": "a"}}},
              "sum": {"type": "test.add", "inputs": {"a": {"from": "x.value"}, "b": {"param": "b"}}},
              "scaled": {"type": "test.scale", "inputs": {"a": {"from": "sum.value"}, "factor": {"param": "factor"}}}},
    "outputs": {"total": "sum.value", "scaled": "scaled.value"},
}


@pytest.fixture
def arithmetic(engine) -> sfumato.GraphFunction:
    return sfumato.load_function(sfumato.Graph.from_dict(ARITHMETIC), engine=engine)


def test_function_signature_is_typed_from_params_and_outputs(arithmetic):
    signature = inspect.signature(arithmetic)
    assert [(p.name, p.kind, p.annotation, p.default) for p in signature.parameters.values()] == [
        ("a", inspect.Parameter.KEYWORD_ONLY, float, inspect.Parameter.empty),
        ("b", inspect.Parameter.KEYWORD_ONLY, float, 2.0),
        ("factor", inspect.Parameter.KEYWORD_ONLY, float, 3.0)]
    returned = signature.return_annotation
    assert returned.__name__ == "ArithmeticOutputs"
    assert returned.__annotations__ == {"total": float, "scaled": float}
    assert arithmetic.__doc__ == "Sum and scaled sum of two numbers."


def test_calling_the_function_runs_the_graph(arithmetic):
    result = arithmetic(a=1.0)
    assert result == (3.0, 9.0)
    assert (result.total, result.scaled) == (3.0, 9.0)
    assert arithmetic.last_result.report.nodes["scaled"].status == sfumato.NodeStatus.RAN


def test_repeated_calls_reuse_the_engine_cache(arithmetic):
    from conftest import CALLS

    arithmetic(a=1.0)
    CALLS.clear()
    assert arithmetic(a=1.0, factor=4.0).scaled == 12.0
    assert CALLS == {"test.scale": 1}


def test_function_refuses_unknown_and_missing_arguments_like_python(arithmetic):
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        arithmetic(a=1.0, c=2.0)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        arithmetic()
    with pytest.raises(TypeError):
        arithmetic(1.0)  # type: ignore[misc] - keyword-only, as the signature says


def test_bad_argument_value_is_a_parameter_error(arithmetic):
    with pytest.raises(sfumato.ParameterError, match="parameter 'b'"):
        arithmetic(a=1.0, b="two")


def test_single_output_function_returns_the_value(engine):
    document: dict[str, Any] = {**ARITHMETIC, "outputs": {"total": "sum.value"}}
    function = sfumato.load_function(sfumato.Graph.from_dict(document), engine=engine)
    assert inspect.signature(function).return_annotation is float
    assert function(a=5.0) == 7.0


def test_shipped_graph_by_name_has_a_typed_signature():
    function = sfumato.load_function("text-to-image")
    signature = inspect.signature(function)
    assert signature.parameters["prompt"].annotation is str
    assert signature.parameters["steps"].annotation is int
    assert signature.parameters["steps"].default == 20
    assert signature.return_annotation is dict  # its one output: zoo.score's scores
    assert function.__name__ == "text_to_image"


def test_invalid_graph_is_refused_when_loaded(engine):
    document = {**ARITHMETIC, "nodes": {**ARITHMETIC["nodes"], "sum": {"type": "test.ad"}}}
    with pytest.raises(sfumato.GraphValidationError, match="test.ad"):
        sfumato.load_function(sfumato.Graph.from_dict(document), engine=engine)


def test_graph_with_subgraphs_and_flow_nodes_returns_the_branch_type():
    function = sfumato.load_function("generate-until-faithful")
    assert inspect.signature(function).return_annotation is float
    assert list(inspect.signature(sfumato.load_function("make-images")).return_annotation.__annotations__) == [
        "images", "scores", "fidelity"]
