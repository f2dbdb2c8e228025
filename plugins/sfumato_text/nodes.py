"""The text nodes: normalize, template, split, join, weights, negative prompt."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Annotated, Any, Literal

from sfumato import Field, PromptWeights, current_limits, node

from .stopwords import STOPWORDS
from .weighting import parse_weighted_prompt

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, lowercase: bool = False, remove_stopwords: bool = False,
                   language: str = "english") -> str:
    """Unicode NFKC, control and zero-width characters removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    if remove_stopwords:
        words = STOPWORDS[language]
        text = " ".join(w for w in text.split(" ") if w.lower().strip(",.;:!?") not in words)
    return text


@node("text.normalize", category="text")
def normalize(
    text: str,
    lowercase: bool = False,
    remove_stopwords: bool = False,
    language: Literal["english", "german", "french", "spanish"] = "english",
    max_length: Annotated[int, Field(ge=1, le=100_000)] = 2000,
    allow_empty: bool = False,
) -> str:
    """Clean a prompt: Unicode NFKC, control characters removed, whitespace collapsed.

    An empty result is an error unless ``allow_empty``, since an empty prompt
    silently produces an unconditioned image. Text longer than ``max_length``
    characters (after cleaning) is an error rather than silently cut.

    Args:
        text: the prompt.
        lowercase: lower-case the result.
        remove_stopwords: drop function words (a, the, is...) of ``language``.
        language: the stop-word list to use.
        max_length: the longest accepted result, in characters.
        allow_empty: accept an empty result.
    """
    cleaned = normalize_text(text, lowercase, remove_stopwords, language)
    if not cleaned and not allow_empty:
        raise ValueError(f"the prompt is empty after normalization (input was {text!r})")
    if len(cleaned) > max_length:
        raise ValueError(f"the prompt has {len(cleaned)} characters after normalization; the limit "
                         f"(max_length) is {max_length}")
    return cleaned


_NUMBER = re.compile(r"\d+")


def template_length(template: str, available: dict[str, str]) -> int:
    """The most characters ``template.format(**available)`` can have, computed without formatting.

    Each slot takes the longer of its value and the widths in its format spec
    (``{subject:>40}`` pads to 40); slots without a known value count as their
    width alone. Raises ``ValueError`` for a malformed template.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"template {template[:80]!r} is malformed: {error}") from None
    total = 0
    for literal, name, spec, _ in parts:
        total += len(literal)
        if name is None:
            continue
        if spec and "{" in spec:
            raise ValueError(f"template slot {{{name}:{spec[:40]}}} has a slot inside its format; "
                             "write the width as a number")
        # Any number in a spec (width, precision) bounds what the slot can add; a
        # 30-digit one is no width anyone means, and too long to convert safely.
        widths = [int(n) if len(n) <= 18 else 10**18 for n in _NUMBER.findall(spec or "")]
        total += max([len(available.get(name, "")), *widths])
    return total


def _describe_template(inputs: dict[str, Any], context: Any) -> dict[str, dict[str, Any]]:
    """At validation: refuse a literal template whose result would be over the text limit."""
    text = inputs.get("template")
    if not isinstance(text, str):
        return {}
    values = inputs.get("values") if isinstance(inputs.get("values"), dict) else {}
    known = {**{k: str(v) for k, v in values.items()},
             **{k: inputs[k] for k in ("subject", "style") if isinstance(inputs.get(k), str)}}
    try:
        length = template_length(text, known)
    except ValueError:
        return {}  # a malformed template is reported when the node runs, with its reason
    current_limits().check_text_length(length, "input 'template' (the text it makes)")
    return {"text": {"max_length": length}}


@node("text.template", category="text", describe_outputs=_describe_template)
def template(
    template: str,
    subject: str = "",
    style: str = "",
    values: dict = {},  # noqa: B006 - never mutated; JSON literal default
) -> str:
    """Fill ``{slot}`` placeholders of a template.

    ``{subject}`` and ``{style}`` come from those inputs; any other slot from
    ``values`` (a JSON object). A slot with no value is an error naming it and
    the values available. Write ``{{`` and ``}}`` for literal braces.

    Args:
        template: text with ``{slot}`` placeholders, e.g. ``"a photo of {subject}, {style}"``.
        subject: the value of ``{subject}``.
        style: the value of ``{style}``.
        values: values of other slots, e.g. ``{"colour": "red"}``.
    """
    available = {**{k: str(v) for k, v in values.items()}, "subject": subject, "style": style}
    # The size is known before anything is built: {x:>999999999} is refused, not allocated.
    current_limits().check_text_length(template_length(template, available), "input 'template' (the text it makes)")
    slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    for slot in slots:
        if not slot.isidentifier():
            raise ValueError(f"template slot {{{slot}}} is not a plain name")
        if slot not in available or (slot in ("subject", "style") and not available[slot]):
            given = sorted(k for k, v in available.items() if v)
            raise ValueError(f"template slot {{{slot}}} has no value; give it in 'values' or as an input "
                             f"(values given: {', '.join(given) or 'none'})")
    return template.format(**available)


@node("text.split", category="text", output="texts")
def split_prompts(
    text: str,
    separator: Literal["newline", "|", ";", "||"] = "newline",
    normalize_each: bool = True,
) -> list[str]:
    """Split a multi-prompt text into a list of prompts; blank entries are dropped.

    Args:
        text: several prompts in one text.
        separator: what separates prompts.
        normalize_each: clean each prompt like ``text.normalize``.
    """
    parts = text.splitlines() if separator == "newline" else text.split(separator)
    prompts = [normalize_text(p) if normalize_each else p for p in parts]
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("no prompts found: the text is empty or only separators")
    return prompts


@node("text.join", category="text")
def join_texts(texts: list[str], separator: str = ", ") -> str:
    """Join a list of texts into one.

    Args:
        texts: the texts.
        separator: put between them.
    """
    return separator.join(texts)


@node("text.weights", category="text", outputs={"text": str, "weights": PromptWeights})
def parse_weights(text: str) -> dict:
    """Parse prompt weighting syntax into plain text plus per-phrase weights.

    ``(red:1.3)`` weights a phrase by 1.3, ``(red)`` by 1.1, ``[blurry]`` by
    1/1.1; brackets nest. ``text`` is the prompt without the syntax (what a
    plain encoder reads); ``weights`` lets an encoder scale token embeddings.
    """
    weights = parse_weighted_prompt(text)
    return {"text": weights.text, "weights": weights}


DEFAULT_NEGATIVE = "blurry, low quality, jpeg artifacts, watermark, text"


@node("text.negative", category="text", output="negative")
def negative_prompt(
    prompt: str,
    negative: str = "",
    include_defaults: bool = False,
    defaults: str = DEFAULT_NEGATIVE,
) -> str:
    """Build the negative prompt for a positive one.

    Joins the user's negative terms (and, optionally, a default list), drops
    duplicates, and drops any term that also appears in the positive prompt:
    asking for "a red circle" with "red" as a negative term cancels itself.

    Args:
        prompt: the positive prompt.
        negative: comma-separated terms to steer away from.
        include_defaults: also use ``defaults``.
        defaults: comma-separated generic terms.
    """
    positive = normalize_text(prompt, lowercase=True)
    positive_words = set(re.findall(r"\w+", positive))
    terms = [t.strip() for t in negative.split(",")]
    if include_defaults:
        terms += [t.strip() for t in defaults.split(",")]
    kept: list[str] = []
    seen: set[str] = set()  # lower-cased kept terms: a set, so thousands of terms stay linear
    for term in terms:
        key = normalize_text(term, lowercase=True)
        if not key or key in seen:
            continue
        if set(re.findall(r"\w+", key)) <= positive_words:
            continue
        kept.append(normalize_text(term))
        seen.add(kept[-1].lower())
    return ", ".join(kept)


@node("text.value", category="text")
def text_value(text: str) -> str:
    """Pass a text on unchanged (a place to set a text once and link it to many nodes)."""
    return text
