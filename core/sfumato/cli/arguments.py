"""Command-line text to typed values: the only place sfumato parses text.

``--set NAME=VALUE``, ``--limit``, ``--max-memory``, graph arguments (a file,
a shipped graph's name, or a sfumato PNG) and run settings are read here; the
Python API and the server pass typed values and never come through here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from ..errors import GraphIssue, GraphValidationError, ParameterError
from ..graph.document import Graph
from ..plugin.devices import check_device_name, check_dtype_name
from ..plugin.limits import Limits, current_limits

_MEMORY_PATTERN = re.compile(r"^(?:(cpu|cuda|mps)=)?(\d+(?:\.\d+)?)\s*(GB|GiB|MB|MiB|G|M)?$", re.IGNORECASE)


def parse_sets(items: list[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` items; ``NAME=@FILE.json`` takes the value from a JSON file (a speed recipe)."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--set expects NAME=VALUE, got {item!r}")
        if value.startswith("@") and value.lower().endswith(".json"):
            path = Path(value[1:]).expanduser()
            try:
                value = path.read_text(encoding="utf-8")
            except OSError as error:
                raise ParameterError(f"--set {name.strip()}: cannot read {path}: {error.strerror or error}") from None
            except UnicodeDecodeError as error:
                raise ParameterError(f"--set {name.strip()}: {path} is not UTF-8 text (byte {error.start})") from None
        values[name.strip()] = value
    return values


def parse_limits(items: list[str], base: Limits | None = None) -> Limits:
    """``--limit max_image_pixels=100000000`` (repeatable) over the current limits."""
    limits = base or current_limits()
    names = [f.name for f in dataclasses.fields(Limits)]
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name not in names:
            raise ParameterError(f"--limit expects NAME=NUMBER with NAME one of {', '.join(names)}; got {item!r:.80}")
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            number = 0
        if not 0 < number < 2**63:
            raise ParameterError(f"--limit {name}: expected a positive whole number, got {value!r:.40}")
        limits = dataclasses.replace(limits, **{name: number})
    return limits


def parse_memory(items: list[str]) -> dict[str, int]:
    budgets: dict[str, int] = {}
    for item in items:
        match = _MEMORY_PATTERN.match(item.strip())
        if not match:
            raise ParameterError(f"--max-memory expects [DEVICE=]SIZE such as 4GB or cuda=10GB, got {item!r}")
        device, number, unit = match.group(1) or "", float(match.group(2)), (match.group(3) or "B").upper()
        factor = {"B": 1, "M": 2**20, "MB": 10**6, "MIB": 2**20, "G": 2**30, "GB": 10**9, "GIB": 2**30}[unit]
        for kind in ([device.lower()] if device else ["cpu", "cuda", "mps"]):
            budgets[kind] = int(number * factor)
    return budgets


def load_graph_argument(path_text: str) -> tuple[Graph, dict[str, Any], int | None]:
    """A graph file, or the graph, parameters and seed stored in a sfumato PNG."""
    path = Path(path_text)
    if path.suffix.lower() == ".png":
        from ..graph.migrations import with_recorded_versions
        from ..run.metadata import read_png_metadata

        try:
            data = read_png_metadata(path)
        except (OSError, ValueError) as error:
            raise GraphValidationError([GraphIssue("$", str(error))], str(path)) from None
        graph = Graph.from_dict(data["graph"], source=f"{path} (stored graph)")
        # The node versions that made the image: planning migrates the graph from them.
        graph = with_recorded_versions(graph, data.get("nodes", {}))
        return graph, dict(data.get("params", {})), data.get("seed")
    from ..graph.shipped import resolve_graph_path  # a path, else a shipped graph's name

    return Graph.load(resolve_graph_path(path_text)), {}, None


def check_run_settings(args: argparse.Namespace) -> None:
    """Settings that are wrong whatever the graph: refused before anything is read or loaded."""
    check_device_name(args.device)
    check_dtype_name(args.dtype)
    if getattr(args, "jobs", 1) < 1:
        raise ParameterError(f"--jobs must be at least 1, got {args.jobs}")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise ParameterError(f"--seed must be between 0 and 2**64 - 1, got {args.seed}")
