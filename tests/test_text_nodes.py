"""The text pack: normalization, templates, splitting, weights, negative prompts."""

from __future__ import annotations

import pytest

from sfumato_text.nodes import join_texts, negative_prompt, normalize, parse_weights, split_prompts, template
from sfumato_text.weighting import parse_weighted_prompt


def test_normalize_applies_nfkc_and_strips_controls_and_spaces():
    assert normalize("  ｒｅｄ\u200b  ﬁsh\x07\tcircle \n") == "red fish circle"


def test_normalize_lowercase_and_stopwords():
    assert normalize("The RED circle is on a Table", lowercase=True, remove_stopwords=True) == "red circle on table"


def test_empty_prompt_is_an_error_unless_allowed():
    with pytest.raises(ValueError, match="empty after normalization"):
        normalize(" \t\u200b ")
    assert normalize("  ", allow_empty=True) == ""


def test_overlong_prompt_is_an_error_with_its_length():
    with pytest.raises(ValueError, match="has 30 characters .* limit \\(max_length\\) is 10"):
        normalize("x" * 30, max_length=10)


def test_template_fills_slots_from_inputs_and_values():
    assert template("a {colour} {subject}, {style}", subject="circle", style="flat",
                    values={"colour": "red"}) == "a red circle, flat"


def test_template_missing_slot_is_named():
    with pytest.raises(ValueError, match=r"slot \{mood\} has no value.*values given: subject"):
        template("{subject} {mood}", subject="cat")


def test_split_drops_blank_entries_and_keeps_order():
    assert split_prompts("a red circle\n\n  a blue   square \n") == ["a red circle", "a blue square"]
    assert split_prompts("x | y", separator="|") == ["x", "y"]
    with pytest.raises(ValueError, match="no prompts"):
        split_prompts("\n \n")


def test_join():
    assert join_texts(["a", "b"], separator=" and ") == "a and b"


@pytest.mark.parametrize("prompt, phrases", [
    ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
    ("a (red) circle", [("a ", 1.0), ("red", 1.1), (" circle", 1.0)]),
    ("[blurry] photo", [("blurry", round(1 / 1.1, 6)), (" photo", 1.0)]),
    ("((big:2) dog)", [("big", 2.2), (" dog", 1.1)]),
    ("a \\(literal\\) bracket", [("a (literal) bracket", 1.0)]),
    ("unclosed (red", [("unclosed ", 1.0), ("red", 1.1)]),
    ("stray ) bracket", [("stray ) bracket", 1.0)]),
    ("ratio 16:9 image", [("ratio 16:9 image", 1.0)]),
])
def test_weighting_syntax(prompt, phrases):
    parsed = parse_weighted_prompt(prompt)
    assert list(parsed.phrases) == phrases
    assert parsed.text == "".join(text for text, _ in phrases)


def test_weights_node_returns_text_and_weights():
    result = parse_weights("a (red:1.5) circle")
    assert result["text"] == "a red circle" and result["weights"].phrases[1] == ("red", 1.5)


def test_negative_prompt_drops_duplicates_and_terms_in_the_prompt():
    assert negative_prompt("a red circle", "red, Blurry, blurry, green") == "Blurry, green"
    with_defaults = negative_prompt("a watermark", "", include_defaults=True)
    assert "watermark" not in with_defaults and "low quality" in with_defaults


# -- resource limits (issue 13, item 8) ---------------------------------------------------------


def test_template_format_width_over_the_limit_is_refused_before_formatting():
    from sfumato import LimitExceededError

    with pytest.raises(LimitExceededError, match="999,999,999 characters, more than the limit of 1,000,000"):
        template("{subject:>999999999}", subject="x")


def test_template_result_over_a_configured_limit_is_refused():
    from sfumato import LimitExceededError, Limits, limits_scope

    with limits_scope(Limits(max_text_length=50)):
        assert template("{subject:>20}", subject="x") == " " * 19 + "x"
        with pytest.raises(LimitExceededError, match="Limits.max_text_length"):
            template("{subject}", subject="y" * 51)


def test_template_width_given_by_another_slot_is_refused():
    with pytest.raises(ValueError, match="has a slot inside its format"):
        template("{subject:{style}}", subject="x", style="9")


def test_weights_nested_deeper_than_the_limit_are_an_error_not_a_quadratic_parse():
    with pytest.raises(ValueError, match="brackets nested more than 32 deep at character 64"):
        parse_weighted_prompt("(a" * 50_000)  # each phrase rescaled by every open bracket: 10 s for 20,000 before


def test_weight_that_is_not_a_finite_number_is_an_error():
    with pytest.raises(ValueError, match="the weight of 'red' is inf"):
        parse_weighted_prompt("(red:" + "9" * 400 + ")")
