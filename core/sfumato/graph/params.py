"""Graph parameters: checking declarations, parsing ``--set`` strings, resolving values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import GraphIssue, ParameterError
from .document import Graph, ParamDeclaration
from .jsontext import JSONTextError, describe_problems, json_problems, parse_json

_PYTHON_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool,
    "list[str]": list[str], "list[int]": list[int], "list[float]": list[float], "json": Any,
}

#: The port type a parameter of each declared type feeds.
PARAM_PORTS: dict[str, str] = {
    "str": "Text", "int": "Int", "float": "Float", "bool": "Bool",
    "list[str]": "TextList", "list[int]": "JSON", "list[float]": "JSON", "json": "Any",
}


@lru_cache(maxsize=None)
def _adapter(type_name: str) -> TypeAdapter:
    return TypeAdapter(_PYTHON_TYPES[type_name])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _numbers(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def check_value(declaration: ParamDeclaration, value: Any) -> Any:
    """Validate ``value`` against a declaration; raise ``ValueError`` with the reason.

    The value may come from anyone (a command line, a server request), so it
    is first checked to be safe JSON data: no deep nesting, no integers past
    64 bits, no NaN, no lone surrogates.
    """
    unsafe = json_problems(value, limit=3)
    if unsafe:
        raise ValueError(describe_problems(unsafe))
    if declaration.type in ("int", "float") and isinstance(value, bool):
        raise ValueError(f"expected {declaration.type}, got a bool")
    try:
        value = _adapter(declaration.type).validate_python(value, strict=declaration.type != "float")
    except ValidationError as error:
        raise ValueError("; ".join(e["msg"] for e in error.errors(include_url=False))) from None
    if declaration.type in ("float", "list[float]") and not all(math.isfinite(v) for v in _numbers(value)):
        raise ValueError(f"{_short(value)} is not a finite number")
    if declaration.choices is not None and not any(_same(value, choice) for choice in declaration.choices):
        raise ValueError(f"{_short(value)} is not one of {_short(declaration.choices)}")
    if declaration.type in ("int", "float", "list[int]", "list[float]"):
        for number in _numbers(value):
            if declaration.minimum is not None and number < declaration.minimum:
                raise ValueError(f"{_short(number)} is below the minimum {declaration.minimum:g}")
            if declaration.maximum is not None and number > declaration.maximum:
                raise ValueError(f"{_short(number)} is above the maximum {declaration.maximum:g}")
    return value


def _same(value: Any, choice: Any) -> bool:
    # ``1 == True`` and ``1 == 1.0`` in Python; a choice of true is not the number 1.
    return value == choice and isinstance(value, bool) == isinstance(choice, bool)


def parse_text_value(declaration: ParamDeclaration, text: str) -> Any:
    """Parse a command-line string for a parameter of the declared type."""
    if declaration.type == "str":
        return text
    if declaration.type.startswith("list[") and not text.lstrip().startswith("["):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if declaration.type == "list[str]":
            return items
        try:
            return [parse_json(item) for item in items]
        except JSONTextError as error:
            raise ValueError(f"{_short(text)} is not a valid {declaration.type}: {error.message}") from None
    if declaration.type == "bool" and text.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return text.lower() in ("true", "yes", "1", "on")
    try:
        return parse_json(text)
    except JSONTextError as error:
        if declaration.type == "json" and error.kind == "syntax":
            return text
        raise ValueError(f"{_short(text)} is not a valid {declaration.type}: {error.message}") from None


def declaration_issues(graph: Graph) -> list[GraphIssue]:
    """Problems in the graph's own parameter declarations (bad defaults, choices)."""
    issues = []
    for name, declaration in graph.params.items():
        if declaration.default is None or name in graph.broken_params:
            continue
        try:
            check_value(declaration, declaration.default)
        except ValueError as error:
            issues.append(GraphIssue(f"params.{name}.default",
                                     f"default {_short(declaration.default)} is invalid: {error}"))
    return issues


def param_problems(graph: Graph, given: dict[str, Any], *, from_text: bool = False
                   ) -> tuple[dict[str, Any], list[GraphIssue]]:
    """Caller values merged over defaults, and a :class:`GraphIssue` for every problem.

    With ``from_text`` the given values are command-line strings to parse.
    """
    problems: list[GraphIssue] = []
    resolved: dict[str, Any] = {}
    for name in given:
        if name not in graph.params:
            known = ", ".join(sorted(graph.params)) or "none"
            problems.append(GraphIssue(f"params.{name}",
                                       f"unknown parameter {name!r} (this graph's parameters: {known})"))
    for name, declaration in graph.params.items():
        blank = isinstance(given.get(name), str) and not given[name].strip()
        if name in given and declaration.required and blank:
            # A required value left blank (an empty form field, `--set model=`) is as good as unset.
            problems.append(GraphIssue(f"params.{name}", f"parameter {name!r} ({declaration.type}) is required "
                                                         f"and was given blank; set it with --set {name}=..."))
        elif name in given:
            value = given[name]
            try:
                if from_text and isinstance(value, str):
                    value = parse_text_value(declaration, value)
                resolved[name] = check_value(declaration, value)
            except ValueError as error:
                problems.append(GraphIssue(f"params.{name}", f"parameter {name!r} ({declaration.type}): {error}"))
        elif declaration.default is not None and not declaration.required:
            resolved[name] = declaration.default
        else:
            problems.append(GraphIssue(f"params.{name}", f"parameter {name!r} ({declaration.type}) is required; "
                                                         f"set it with --set {name}=..."))
    return resolved, problems


def resolve_params(graph: Graph, given: dict[str, Any], *, from_text: bool = False) -> dict[str, Any]:
    """Merge caller values over defaults; raise :class:`ParameterError` listing every problem.

    With ``from_text`` the given values are command-line strings to parse.
    """
    resolved, problems = param_problems(graph, given, from_text=from_text)
    if problems:
        raise ParameterError("; ".join(problem.message for problem in problems))
    return resolved


# -- one range per parameter ---------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One end of a parameter's range, and where it comes from."""

    value: float
    inclusive: bool = True
    #: ``""`` for the parameter's own declaration, else the input that imposes it (``gen.steps (diffusion.generate)``).
    source: str = ""

    def describe(self, side: str) -> str:
        """``the maximum 100 of gen.steps (diffusion.generate)``."""
        word = {("min", True): "minimum", ("min", False): "exclusive minimum",
                ("max", True): "maximum", ("max", False): "exclusive maximum"}[(side, self.inclusive)]
        return f"the {word} {self.value:g}" + (f" of {self.source}" if self.source else "")


@dataclass
class ParamRange:
    """A numeric parameter's one range: its declared bounds narrowed by every input it feeds.

    A value outside it is reported once, at ``params.NAME``, in the same words
    whichever bound it breaks; a range no value fits, or a declared bound that
    an input narrows, is reported once too, not once per feeding site.
    """

    name: str
    low: Bound | None = None
    high: Bound | None = None
    #: The declared bounds, before any input narrowed them.
    declared_low: Bound | None = None
    declared_high: Bound | None = None

    def narrow(self, low: Bound | None, high: Bound | None) -> None:
        if low is not None and (self.low is None or low.value > self.low.value
                                or (low.value == self.low.value and not low.inclusive)):
            self.low = low
        if high is not None and (self.high is None or high.value < self.high.value
                                 or (high.value == self.high.value and not high.inclusive)):
            self.high = high

    def empty(self) -> bool:
        if self.low is None or self.high is None:
            return False
        if self.low.value == self.high.value:
            return not (self.low.inclusive and self.high.inclusive)
        return self.low.value > self.high.value

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (a number, or a list of numbers) is outside the range, or ``None``."""
        for number in _numbers(value):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue  # not a number: the type check says so
            low, high = self.low, self.high
            if low is not None and (number < low.value or (number == low.value and not low.inclusive)):
                return f"{_short(number)} is below {low.describe('min')}"
            if high is not None and (number > high.value or (number == high.value and not high.inclusive)):
                return f"{_short(number)} is above {high.describe('max')}"
        return None


def input_bounds(constraints: dict[str, Any], source: str) -> tuple[Bound | None, Bound | None]:
    """The numeric bounds in a node input's constraints (``ge``/``gt``/``le``/``lt``)."""
    low = Bound(constraints["ge"], True, source) if "ge" in constraints else \
        Bound(constraints["gt"], False, source) if "gt" in constraints else None
    high = Bound(constraints["le"], True, source) if "le" in constraints else \
        Bound(constraints["lt"], False, source) if "lt" in constraints else None
    return low, high


def reconcile_ranges(graph: Graph, feeds: dict[str, list[tuple[str, dict[str, Any]]]]
                     ) -> tuple[dict[str, ParamRange], list[GraphIssue]]:
    """Each numeric parameter's range, from its declaration and the inputs it feeds.

    ``feeds`` maps a parameter to ``(where, constraints)`` for each input it
    feeds. Returns the ranges, and one issue per parameter at most for each
    conflict: an error when no value fits them all, a warning when an input
    allows less than the declaration promises (naming the range that holds).
    """
    ranges: dict[str, ParamRange] = {}
    issues: list[GraphIssue] = []
    for name, sites in feeds.items():
        declaration = graph.params.get(name)
        if declaration is None or declaration.type not in ("int", "float", "list[int]", "list[float]"):
            continue
        declared_low = Bound(declaration.minimum) if declaration.minimum is not None else None
        declared_high = Bound(declaration.maximum) if declaration.maximum is not None else None
        found = ParamRange(name, declared_low, declared_high, declared_low, declared_high)
        for where, constraints in sites:
            found.narrow(*input_bounds(constraints, where))
        if found.low is None and found.high is None:
            continue
        ranges[name] = found
        if found.empty():
            issues.append(GraphIssue(f"params.{name}", f"parameter {name!r}: no value fits every input it feeds: "
                                                       f"{found.low.describe('min')} is not below "
                                                       f"{found.high.describe('max')}"))
            continue
        narrowed = [(side, bound, declared) for side, bound, declared in
                    (("minimum", found.low, declared_low), ("maximum", found.high, declared_high))
                    if declared is not None and bound is not None and bound.source]
        for side, bound, declared in narrowed:
            allows = {("minimum", True): "at least", ("minimum", False): "only values above",
                      ("maximum", True): "at most", ("maximum", False): "only values below"}[(side, bound.inclusive)]
            issues.append(GraphIssue(
                f"params.{name}.{side}", f"parameter {name!r} declares {side} {declared.value:g}, but it feeds "
                                          f"{bound.source}, which takes {allows} {bound.value:g}; that is the "
                                          f"parameter's {side}", severity="warning"))
    return ranges, issues
