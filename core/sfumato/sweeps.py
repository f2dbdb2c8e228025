"""Sweeps: many runs of one graph over parameter values.

``--sweep seed=0..7`` (an inclusive integer range, optionally ``0..20..5`` with a
step), ``--sweep guidance=3,5,7`` (a list), ``--sweep prompt=@prompts.txt`` (one
value per line, blank lines and ``#`` comments skipped). Axes are crossed by
default; ``--zip`` pairs them instead (all axes must then have the same length).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ParameterError

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
MAX_RUNS = 100_000


@dataclass(frozen=True)
class SweepAxis:
    """One swept parameter and its values (command-line strings, parsed per parameter type later)."""

    name: str
    values: tuple[Any, ...]


def parse_axis(text: str, base_dir: Path | None = None) -> SweepAxis:
    """Parse ``name=spec``; raises :class:`ParameterError` with the reason."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ParameterError(f"--sweep expects NAME=VALUES (0..7, a,b,c or @file), got {text!r}")
    spec = spec.strip()
    if not spec:
        raise ParameterError(f"--sweep {name}: no values given")
    if spec.startswith("@"):
        path = Path(spec[1:]).expanduser()
        if base_dir is not None and not path.is_absolute() and not path.exists():
            path = base_dir / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ParameterError(f"--sweep {name}: cannot read {path}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise ParameterError(f"--sweep {name}: {path} is not UTF-8 text (byte {error.start}); "
                                 "save it as UTF-8") from None
        values = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        if not values:
            raise ParameterError(f"--sweep {name}: {path} holds no values")
        return SweepAxis(name, values)
    match = _RANGE.match(spec)
    if match:
        start, stop = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) else (1 if stop >= start else -1)
        if step == 0 or (stop - start) * step < 0:
            raise ParameterError(f"--sweep {name}: range {spec!r} is empty or its step has the wrong sign")
        values = tuple(str(v) for v in range(start, stop + (1 if step > 0 else -1), step))
        if len(values) > MAX_RUNS:
            raise ParameterError(f"--sweep {name}: {len(values)} values is more than {MAX_RUNS}")
        return SweepAxis(name, values)
    values = tuple(part.strip() for part in spec.split(","))
    if any(not v for v in values):
        raise ParameterError(f"--sweep {name}: empty value in list {spec!r}")
    return SweepAxis(name, values)


def combine(axes: list[SweepAxis], *, zip_axes: bool = False, base: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """Parameter sets: every combination (cross) or the i-th value of each axis (zip)."""
    names = [axis.name for axis in axes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ParameterError(f"--sweep names {', '.join(sorted(duplicates))} more than once")
    base = dict(base or {})
    if not axes:
        return [base]
    if zip_axes:
        lengths = {axis.name: len(axis.values) for axis in axes}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{n}: {k}" for n, k in lengths.items())
            raise ParameterError(f"--zip needs axes of equal length ({detail})")
        rows = zip(*(axis.values for axis in axes))
    else:
        total = 1
        for axis in axes:
            total *= len(axis.values)
        if total > MAX_RUNS:
            raise ParameterError(f"the sweep makes {total} runs, more than {MAX_RUNS}")
        rows = itertools.product(*(axis.values for axis in axes))
    return [{**base, **dict(zip(names, row))} for row in rows]
