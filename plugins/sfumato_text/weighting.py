"""Parsing prompt-weighting syntax into phrases with weights.

The syntax most prompt users know (from the AUTOMATIC1111 web UI):

- ``(phrase:1.3)`` multiplies the phrase's weight by 1.3;
- ``(phrase)`` multiplies it by 1.1, ``[phrase]`` divides it by 1.1;
- brackets nest and multiply; ``\\(`` and ``\\[`` are literal brackets.

Unbalanced brackets are not an error: an unclosed bracket applies to the end
of the prompt and a stray closing bracket is kept as text, as users expect
from other tools. Brackets nested deeper than :data:`MAX_DEPTH` and weights
that are not finite numbers are errors: each phrase is rescaled once per
bracket around it, so the depth bound keeps parsing linear in the prompt.
"""

from __future__ import annotations

import math
import re

from sfumato import PromptWeights

UP, DOWN = 1.1, 1 / 1.1
#: The deepest nesting of brackets accepted.
MAX_DEPTH = 32
_TOKEN = re.compile(r"\\[()\[\]]|\(|\)|\[|\]|:\s*(-?\d+(?:\.\d+)?)\s*\)|[^\\()\[\]:]+|:|\\")


def parse_weighted_prompt(prompt: str) -> PromptWeights:
    """Split ``prompt`` into ``(text, weight)`` phrases; see the module docstring."""
    phrases: list[tuple[str, float]] = []
    stack: list[tuple[str, int]] = []  # (bracket, index in phrases where it opened)

    def add(text: str) -> None:
        if text:
            phrases.append((text, 1.0))

    for match in _TOKEN.finditer(prompt):
        token = match.group(0)
        if token in ("\\(", "\\)", "\\[", "\\]"):
            add(token[1])
        elif token in ("(", "["):
            if len(stack) >= MAX_DEPTH:
                raise ValueError(f"brackets nested more than {MAX_DEPTH} deep at character {match.start()} "
                                 "of the prompt; write \\( for a literal bracket")
            stack.append((token, len(phrases)))
        elif match.group(1) is not None and stack and stack[-1][0] == "(":
            _, start = stack.pop()
            _scale(phrases, start, float(match.group(1)))
        elif token == ")" and stack and stack[-1][0] == "(":
            _, start = stack.pop()
            _scale(phrases, start, UP)
        elif token == "]" and stack and stack[-1][0] == "[":
            _, start = stack.pop()
            _scale(phrases, start, DOWN)
        elif match.group(1) is not None:
            add(token)
        else:
            add(token)
    for bracket, start in reversed(stack):
        _scale(phrases, start, UP if bracket == "(" else DOWN)
    merged: list[tuple[str, float]] = []
    for text, weight in phrases:
        if merged and abs(merged[-1][1] - weight) < 1e-9:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    for text, weight in merged:
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {text[:40]!r} is {weight}, not a finite number")
    merged = [(text, round(weight, 6)) for text, weight in merged]
    return PromptWeights("".join(text for text, _ in merged), tuple(merged))


def _scale(phrases: list[tuple[str, float]], start: int, factor: float) -> None:
    for index in range(start, len(phrases)):
        text, weight = phrases[index]
        phrases[index] = (text, weight * factor)
