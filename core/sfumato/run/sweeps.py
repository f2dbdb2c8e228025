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

from ..errors import ParameterError
from ..plugin.limits import current_limits

# At most 19 digits per bound: any larger is no 64-bit integer (and a longer
# digit string would first meet Python's int/str conversion limit).
_RANGE = re.compile(r"^(-?\d{1,19})\.\.(-?\d{1,19})(?:\.\.(-?\d{1,19}))?$")
#: The default most runs in a sweep (see :class:`sfumato.Limits` to change it).
MAX_RUNS = 100_000


def _check_runs(runs: int, what: str) -> None:
    limit = current_limits().max_sweep_runs
    if runs > limit:
        raise ParameterError(f"{what} makes {runs:,} runs, more than the limit of {limit:,} "
                             "(Limits.max_sweep_runs)")


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
        _check_runs(len(values), f"--sweep {name}")
        return SweepAxis(name, values)
    match = _RANGE.match(spec)
    if match:
        start, stop = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) else (1 if stop >= start else -1)
        if step == 0 or (stop - start) * step < 0:
            raise ParameterError(f"--sweep {name}: range {spec!r} is empty or its step has the wrong sign")
        numbers = range(start, stop + (1 if step > 0 else -1), step)
        # len() of a range is arithmetic: 0..20000000 is refused without making a value.
        _check_runs(len(numbers), f"--sweep {name}={spec}")
        return SweepAxis(name, tuple(str(v) for v in numbers))
    if spec.count(",") >= current_limits().max_sweep_runs:
        _check_runs(spec.count(",") + 1, f"--sweep {name}")
    values = tuple(part.strip() for part in spec.split(","))
    if any(not v for v in values):
        raise ParameterError(f"--sweep {name}: empty value in list {spec[:60]!r}")
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
        _check_runs(len(axes[0].values), "the zipped sweep")
        rows = zip(*(axis.values for axis in axes))
    else:
        total = 1
        for axis in axes:
            total *= len(axis.values)
        # The product of the lengths, checked before a single combination is made.
        _check_runs(total, "the sweep (" + " x ".join(str(len(axis.values)) for axis in axes) + ")")
        rows = itertools.product(*(axis.values for axis in axes))
    return [{**base, **dict(zip(names, row))} for row in rows]
