"""The fast check of untrusted JSON never calls a value clean that the exact walk finds a problem in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sfumato.graph.jsontext import MAX_DEPTH, _surely_clean, _walk_problems, json_problems

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["\ud800", "a\udfffb", "k" * 300, "9" * 30]),
)
keys = st.one_of(st.text(max_size=6), st.sampled_from(["\ud800", "k" * 300]), st.integers(-3, 3), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=30)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values)
def test_the_fast_check_never_calls_a_value_with_problems_clean(value):
    if _surely_clean(value, MAX_DEPTH):
        assert _walk_problems(value, "", max_depth=MAX_DEPTH, limit=20) == []


def test_nesting_beyond_the_limit_is_found_by_both_paths():
    deep: list = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    assert not _surely_clean(deep, MAX_DEPTH)
    assert "nested more than" in json_problems(deep)[0][1]


def test_a_clean_document_needs_no_walk():
    document = {"version": 1, "nodes": {f"n{i}": {"type": "x.y", "inputs": {"a": i, "b": "t"}} for i in range(50)}}
    assert _surely_clean(document, MAX_DEPTH) and json_problems(document) == []
