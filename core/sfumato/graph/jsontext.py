"""Untrusted JSON: parsing it with errors a person can act on, and checking what came out.

Graph files, ``--set`` values, server requests and PNG metadata all arrive as
JSON someone else wrote. Python's parser and everything after it have edges
that end in a traceback rather than an error: nesting deep enough to exhaust
the stack, integers over 4,300 digits, lone surrogates (``"\\ud800"``) that
parse fine and fail when the text is encoded to be saved, ``NaN`` and
``1e999``. :func:`parse_json` and :func:`json_problems` turn each into a
sentence naming where it is; neither recurses, so neither can overflow.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deepest nesting of lists and objects accepted anywhere in a document.
MAX_DEPTH = 64
#: Longest object key accepted: keys are ids and names, and every message repeats them.
MAX_KEY_LENGTH = 256
#: Integers must fit in 64 bits (signed or unsigned): seeds, sizes, counts.
INTEGER_BITS = 64
#: Digits of an integer literal above which it cannot fit in 64 bits.
_MAX_INTEGER_DIGITS = 20
_MAX_KEY_IN_PATH = 40


class JSONTextError(ValueError):
    """Text that is not acceptable JSON; ``where`` is ``line L, column C`` or ``$``.

    ``kind`` is ``syntax`` (not JSON at all: includes an empty text and a
    trailing comma) or ``limit`` (JSON, but nested too deeply or a number too long).
    """

    def __init__(self, where: str, message: str, kind: str = "syntax") -> None:
        self.where = where
        self.message = message
        self.kind = kind
        super().__init__(f"{where}: {message}")


class _HugeInteger(ValueError):
    def __init__(self, digits: str) -> None:
        self.digits = digits
        super().__init__(digits)


def _parse_int(text: str) -> int:
    # Checked before int() so that a 5,000-digit number never meets the
    # interpreter's int/str conversion limit (a ValueError without a position).
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise _HugeInteger(text)
    return int(text)


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def _trailing_comma(text: str, index: int) -> int | None:
    """The index of a comma just before a closing bracket at ``index``, if that is the error."""
    closing = index
    while closing < len(text) and text[closing] in " \t\r\n":
        closing += 1
    if closing >= len(text) or text[closing] not in "}]":
        return None
    before = index - 1
    while before >= 0 and text[before] in " \t\r\n":
        before -= 1
    return before if before >= 0 and text[before] == "," else None


def parse_json(text: str, **hooks: Any) -> Any:
    """Parse JSON text; raise :class:`JSONTextError` naming the problem and its position.

    ``hooks`` pass on to :func:`json.loads` (``object_pairs_hook``). An empty
    text, a trailing comma, nesting deeper than the parser can follow and
    integers too long to be a number are named as such.
    """
    if not text.strip():
        raise JSONTextError("$", "the text is empty; expected a JSON value such as an object {...}")
    try:
        return json.loads(text, parse_int=_parse_int, **hooks)
    except _HugeInteger as error:
        index = text.find(error.digits)
        where = _position(text, index) if index >= 0 else "$"
        raise JSONTextError(where, f"an integer of {len(error.digits.lstrip('-'))} digits; integers must fit "
                                   f"in {INTEGER_BITS} bits", "limit") from None
    except RecursionError:
        raise JSONTextError("$", f"lists or objects nested too deeply (the most is {MAX_DEPTH} levels)",
                            "limit") from None
    except json.JSONDecodeError as error:
        comma = _trailing_comma(text, error.pos)
        if comma is not None:
            raise JSONTextError(_position(text, comma), "trailing comma before a closing bracket; "
                                                        "JSON allows no comma after the last item") from None
        raise JSONTextError(f"line {error.lineno}, column {error.colno}", f"invalid JSON: {error.msg}") from None


def _join(path: str, key: Any) -> str:
    if path.endswith("..."):
        return path
    if len(path) > 100:  # a path 1,000 levels deep says no more than its first 100 characters
        return path + "..."
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if len(text) > _MAX_KEY_IN_PATH:
        text = text[:_MAX_KEY_IN_PATH] + "..."
    return f"{path}.{text}" if path else text


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate on its own (it cannot be written as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problem(text: str) -> str | None:
    """Why a string cannot be used as text, or ``None``."""
    if has_lone_surrogate(text):
        return "holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text and cannot be saved"
    return None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_LONG_KEY = re.compile(r'"[^"]{%d,}"\s*:' % (MAX_KEY_LENGTH + 1))
#: For ``str.translate`` (C speed for ASCII): every digit as ``0``, so a long integer is a run of zeros.
_DIGITS_AS_ZERO = {ord(digit): "0" for digit in "123456789"}
_LONG_DIGIT_RUN = "0" * (_MAX_INTEGER_DIGITS - 1)
#: For ``str.translate``: brackets of either kind as ``(`` and ``)``, everything else dropped. (The text
#: left once strings are cut out is ASCII: JSON's punctuation, numbers, true, false and null.)
_BRACKETS_AS_PARENTHESES = {code: None for code in range(128)} | {ord("["): "(", ord("{"): "(",
                                                                  ord("]"): ")", ord("}"): ")"}
#: Levels of brackets peeled at C speed before the depth is counted bracket by bracket.
_PEELED_LEVELS = 16
#: One encoder for every check: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False)


def _deepest(parentheses: str) -> int:
    """How deep balanced parentheses nest, counted one at a time (anything else is ignored)."""
    depth = deepest = 0
    for character in parentheses:
        if character == "(":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif character == ")":
            depth -= 1
    return deepest


def _depth_at_most(structure: str, max_depth: int) -> bool:
    """Whether the brackets of ``structure`` (well-formed JSON less its strings) nest at most ``max_depth`` deep."""
    parentheses = structure.translate(_BRACKETS_AS_PARENTHESES)
    # Each pass removes the innermost level: every "()" is a container with no container inside, and
    # replace() does not see the pairs its own removals make. A graph file is a handful of levels deep.
    for _ in range(min(max_depth, _PEELED_LEVELS)):
        parentheses = parentheses.replace("()", "")
        if not parentheses:
            return True
    if max_depth <= _PEELED_LEVELS:
        return False
    # Deeper than that (rare): what is left is as deep as the rest of the way down.
    return _deepest(parentheses) + _PEELED_LEVELS <= max_depth


def _surely_clean(value: Any, max_depth: int) -> bool:
    """A fast, conservative check: True only when :func:`json_problems` would find nothing.

    ``json.dumps`` (in C) refuses NaN, infinities and non-JSON values, and its
    text must load back equal to the value (non-text keys, tuples); encoding
    its text finds lone surrogates. With the strings cut out of the text, a
    long run of digits is a long integer, and peeling innermost bracket pairs
    off what is left measures the nesting; a string longer than any key may
    be is looked at more closely. All of it runs in C (``str.translate``,
    ``str.replace``, ``str.split``). Anything suspicious (false alarms
    included) falls through to the exact, path-naming walk. A large graph
    file is checked about ten times faster this way.
    """
    try:
        # No circular check: a cycle ends in RecursionError, which sends the value to the walk like
        # the check's ValueError would (the walk stops at the depth limit), and checking costs a fifth.
        text = _ENCODER.encode(value)
        text.encode("utf-8")
        # dumps quietly writes non-text keys as text: the value must come back exactly as it is.
        if json.loads(text) != value:
            return False
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        return False
    if "\\" not in text:
        # No escapes, so every quote opens or closes a string: the pieces between them are the structure.
        pieces = text.split('"')
        structure = "".join(pieces[0::2])
        long_string = max(map(len, pieces[1::2]), default=0) > MAX_KEY_LENGTH
    else:
        structure, long_string = _STRING.sub("", text), True
    if long_string and _LONG_KEY.search(text):
        return False
    if _LONG_DIGIT_RUN in structure.translate(_DIGITS_AS_ZERO):
        return False
    return _depth_at_most(structure, max_depth)


def json_problems(value: Any, path: str = "", *, max_depth: int = MAX_DEPTH, limit: int = 20
                  ) -> list[tuple[str, str]]:
    """``(path, problem)`` for what makes ``value`` unsafe as JSON data, at most ``limit`` of them.

    Problems: nesting deeper than ``max_depth``, integers beyond 64 bits,
    floats that are not finite, lone surrogates in strings or keys, keys that
    are not strings or longer than ``MAX_KEY_LENGTH``, and values that are no
    JSON type (tuples count as lists).
    Walks with an explicit stack, so any depth is safe to check.
    """
    if _surely_clean(value, max_depth):
        return []
    return _walk_problems(value, path, max_depth=max_depth, limit=limit)


def _walk_problems(value: Any, path: str, *, max_depth: int, limit: int) -> list[tuple[str, str]]:
    """The exact walk of :func:`json_problems`: every value visited, each problem with its path."""
    problems: list[tuple[str, str]] = []
    # A child's place is kept as (parent's place, key) and written out as a path only for a
    # problem: building a path string for every value was a third of planning a large graph.
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]

    def where(place: Any) -> str:
        keys = []
        while place is not None:
            place, key = place
            keys.append(key)
        text = path
        for key in reversed(keys):
            text = _join(text, key)
        return text or "$"

    while stack and len(problems) < limit:
        item, place, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                problem = text_problem(item)
                if problem:
                    problems.append((where(place), f"the text {problem}"))
        elif item is None or kind is bool:
            continue
        elif kind is int or (isinstance(item, int) and not isinstance(item, bool)):
            if item.bit_length() > INTEGER_BITS:
                problems.append((where(place), f"an integer of {item.bit_length()} bits; integers must fit in "
                                               f"{INTEGER_BITS} bits"))
        elif kind is float or isinstance(item, float):
            if not math.isfinite(item):
                problems.append((where(place), f"{item!r} is not a finite number (JSON has no NaN or infinity)"))
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                problems.append((where(place), f"the text {problem}"))
        elif isinstance(item, (dict, list, tuple)):
            if depth >= max_depth:
                problems.append((where(place), f"nested more than {max_depth} levels deep"))
                continue
            if isinstance(item, dict):
                children: list[tuple[Any, Any]] = []
                for key, child in item.items():
                    if type(key) is not str and not isinstance(key, str):
                        problems.append((where(place), f"key {key!r:.40} is not a string"))
                        continue
                    if len(key) > MAX_KEY_LENGTH:
                        problems.append((where((place, key)), f"a key of {len(key):,} characters; keys (ids, "
                                                              f"names) are at most {MAX_KEY_LENGTH}"))
                        continue
                    if not key.isascii() and has_lone_surrogate(key):
                        problems.append((where((place, key.encode("utf-8", "replace").decode())),
                                         "the key holds a lone surrogate, which is not Unicode text"))
                        continue
                    children.append((child, (place, key)))
            else:
                children = [(child, (place, index)) for index, child in enumerate(item)]
            stack.extend((child, child_place, depth + 1) for child, child_place in reversed(children))
        else:
            problems.append((where(place), f"a {type(item).__name__} is not a JSON value"))
    return problems


def describe_problems(problems: list[tuple[str, str]]) -> str:
    """The problems of :func:`json_problems` as one sentence."""
    return "; ".join(f"{path}: {problem}" if path and path != "$" else problem for path, problem in problems)
