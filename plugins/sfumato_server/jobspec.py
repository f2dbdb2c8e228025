"""Reading a job request: untrusted JSON in, typed values and sweep axes out.

Values are JSON from start to end: the server never turns them into text for
the command-line parser, and a sweep axis is a JSON list of values or a range
object ``{"from": 0, "to": 7, "step": 1}`` (inclusive, like ``0..7`` on the
command line). Text specs such as ``"@prompts.txt"`` are refused: reading a
file named by a request would let any client read the server's files.

A sweep's size is computed from its axes' lengths before any parameter set is
built, so ``{"from": 0, "to": 20000000}`` is refused without allocating.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

#: Integers in requests are limited to what SQLite and every node can hold.
INT_LIMIT = 2**63
#: Priorities are small on purpose: higher runs first, the same priority in order.
MAX_PRIORITY = 1_000_000
JOB_FIELDS = ("graph", "params", "sweep", "priority", "keep_going", "webhook")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message (never file contents)."""

    def __init__(self, status: int, message: str, issues: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.issues = status, message, issues

    def as_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": self.message, **({"issues": self.issues} if self.issues is not None else {})}


def _parse_int(text: str) -> int:
    # Refuse before int() so a 100,000-digit number costs nothing.
    if len(text.lstrip("-")) > 19 or not -INT_LIMIT <= (value := int(text)) < INT_LIMIT:
        raise ValueError(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range "
                         f"(-2^63 to 2^63-1)")
    return value


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes, *, max_depth: int = 64) -> Any:
    """Decode a request body; :class:`RequestError` (400) for anything that is not plain, bounded JSON.

    Refused: invalid JSON or UTF-8, ``NaN``/``Infinity``, integers outside 64 bits,
    nesting deeper than ``max_depth``, and strings holding lone surrogates (they
    cannot be written to a file, a database or a PNG).
    """
    if not body.strip():
        raise RequestError(400, "the request has no body; expected a JSON object")
    try:
        value = json.loads(body, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as error:
        raise RequestError(400, f"invalid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise RequestError(400, f"the body is not UTF-8 text (byte {error.start})") from None
    except ValueError as error:
        raise RequestError(400, f"invalid JSON: {error}") from None
    except RecursionError:
        raise RequestError(400, f"the JSON is nested too deeply (the limit is {max_depth} levels)") from None
    check_plain(value, max_depth=max_depth)
    return value


def check_plain(value: Any, *, max_depth: int = 64, where: str = "$") -> None:
    """Raise :class:`RequestError` when a decoded JSON value is too deep or holds a lone surrogate."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise RequestError(400, f"the JSON is nested too deeply at {path} (the limit is {max_depth} levels)")
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, f"{path} (a key)")
                stack.append((child, f"{path}.{key}" if len(path) < 200 else path, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]" if len(path) < 200 else path, depth + 1)
                         for i, child in enumerate(item))


def _check_text(text: Any, path: str) -> None:
    if not isinstance(text, str):
        raise RequestError(400, f"{path} is a {type(text).__name__} where text was expected")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(400, f"{path} holds a lone surrogate (character {error.start}); "
                                "send valid Unicode text") from None


# -- sweeps ------------------------------------------------------------------------------


def axis_values(name: str, spec: Any) -> Sequence[Any]:
    """The values of one axis: a list as given, or a lazy ``range`` (nothing is allocated here)."""
    if isinstance(spec, list):
        if not spec:
            raise RequestError(400, f"sweep axis {name!r} has no values")
        return spec
    if isinstance(spec, dict):
        unknown = set(spec) - {"from", "to", "step"}
        if unknown or "from" not in spec or "to" not in spec:
            raise RequestError(400, f"sweep axis {name!r}: a range is {{\"from\": A, \"to\": B, \"step\": S}} "
                                    "(integers, 'to' included, 'step' optional)")
        start, stop = spec["from"], spec["to"]
        step = spec.get("step", 1 if _is_int(stop) and _is_int(start) and stop >= start else -1)
        if not all(_is_int(v) for v in (start, stop, step)):
            raise RequestError(400, f"sweep axis {name!r}: 'from', 'to' and 'step' must be integers")
        if step == 0 or (stop - start) * step < 0:
            raise RequestError(400, f"sweep axis {name!r}: the range from {start} to {stop} by {step} is empty")
        return range(start, stop + (1 if step > 0 else -1), step)
    # Deliberately not echoing the value: it may be '@/some/file', and nothing about it is read.
    raise RequestError(400, f"sweep axis {name!r} must be a JSON list of values or a range object "
                            "{\"from\": 0, \"to\": 7}; text specs such as '0..7', 'a,b' or '@file' "
                            "are for the command line only, and the server reads no file named by a request")


def axis_length(values: Sequence[Any]) -> int:
    """An axis's length without ``len()``, which overflows on ranges longer than 2^63."""
    if isinstance(values, range):
        return max(0, (values.stop - values.start + values.step - (1 if values.step > 0 else -1)) // values.step)
    return len(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Sweep:
    """Checked sweep axes: names, lazy values, crossed or zipped."""

    axes: dict[str, Sequence[Any]]
    zip_axes: bool = False

    @property
    def size(self) -> int:
        """How many runs, from the axes' lengths alone."""
        lengths = [axis_length(values) for values in self.axes.values()]
        if self.zip_axes:
            return lengths[0] if lengths else 1
        total = 1
        for length in lengths:
            total *= length
        return total

    def param_sets(self, base: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Each run's parameters: ``base`` with that run's axis values over it."""
        names = list(self.axes)
        rows = zip(*self.axes.values()) if self.zip_axes else itertools.product(*self.axes.values())
        for row in rows:
            yield {**base, **dict(zip(names, row))}

    def as_json(self) -> dict[str, Any]:
        """The form stored with a job (ranges stay ranges)."""
        return {"axes": {name: ({"from": v.start, "to": v[-1], "step": v.step} if isinstance(v, range) else list(v))
                         for name, v in self.axes.items()}, "zip": self.zip_axes}


def parse_sweep(spec: Any, *, max_runs: int) -> Sweep | None:
    """A request's ``sweep`` member as a :class:`Sweep`, refused (413) when it makes more than ``max_runs`` runs."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"axes", "zip"}:
        raise RequestError(400, "'sweep' must be {\"axes\": {NAME: [values] or {\"from\": A, \"to\": B}}, "
                                "\"zip\": false}")
    axes_spec = spec.get("axes") or {}
    if not isinstance(axes_spec, dict):
        raise RequestError(400, "'sweep.axes' must be an object mapping parameter names to values")
    zip_axes = spec.get("zip", False)
    if not isinstance(zip_axes, bool):
        raise RequestError(400, "'sweep.zip' must be true or false")
    axes = {name: axis_values(name, values) for name, values in axes_spec.items()}
    if not axes:
        return None
    if zip_axes and len({axis_length(v) for v in axes.values()}) > 1:
        detail = ", ".join(f"{name}: {axis_length(v)}" for name, v in axes.items())
        raise RequestError(400, f"zipped sweep axes must have the same length ({detail})")
    sweep = Sweep(axes, zip_axes)
    if sweep.size > max_runs:
        raise RequestError(413, f"the sweep makes {sweep.size} runs; this server's limit is {max_runs} "
                                "(sfumato serve --max-sweep-runs)")
    return sweep


def parse_priority(value: Any) -> int:
    """A job priority: an integer within ±:data:`MAX_PRIORITY`."""
    if value is None:
        return 0
    if not _is_int(value) or abs(value) > MAX_PRIORITY:
        raise RequestError(400, f"'priority' must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}")
    return value
