"""The graphs that ship with sfumato, found by name from any folder.

They are package data (``sfumato/shipped_graphs/*.json``; the repository's
``graphs/`` is a link to that folder), so ``sfumato run text-to-image`` and
``sfumato serve`` find them wherever sfumato is installed, not only in a clone.

A few shipped graphs read sample data of the source repository: a parameter
whose default starts with ``examples/`` (a folder of images, a retrieval
index). Like every relative path in a graph, it is relative to the current
folder, so it exists when run from a clone's root. Elsewhere
:func:`missing_example_paths` names the parameter to set, before anything runs.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..errors import GraphIssue, GraphValidationError

#: Where the shipped graph files are installed.
SHIPPED_GRAPHS_DIR = Path(__file__).resolve().parents[1] / "shipped_graphs"

#: Defaults starting with this name sample data of the source repository.
EXAMPLES_PREFIX = "examples/"


def shipped_graphs() -> dict[str, Path]:
    """Every shipped graph, by name (the file name without ``.json``), sorted by name."""
    return {path.stem: path for path in sorted(SHIPPED_GRAPHS_DIR.glob("*.json"))}


def shipped_graph_path(name: str) -> Path | None:
    """The file of the shipped graph called ``name`` (``.json`` optional), or None."""
    stem = name[:-5] if name.endswith(".json") else name
    return shipped_graphs().get(stem)


def resolve_graph_path(text: str) -> Path:
    """A graph argument to a file: an existing path first, else a shipped graph's name.

    A file in the current folder always wins over a shipped graph of the same
    name, so a user's own ``text-to-image.json`` is never shadowed.

    Raises :class:`GraphValidationError` listing the shipped graphs (with the
    closest name) when ``text`` is neither.
    """
    path = Path(text).expanduser()
    if path.exists():
        return path
    shipped = shipped_graph_path(text)
    if shipped is not None:
        return shipped
    names = list(shipped_graphs())
    close = difflib.get_close_matches(path.stem, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise GraphValidationError([GraphIssue(
        "$", f"no graph file at {text}, and no shipped graph of that name; {hint}"
             f"shipped graphs (run one by name, from any folder): {', '.join(names)}",
    )], text)


def missing_example_paths(graph: Any, params: dict[str, Any] | None = None) -> list[GraphIssue]:
    """Parameters left at an ``examples/...`` default that does not exist from the current folder.

    Only defaults are checked: a value the caller set is the caller's path,
    and its node reports it if it is wrong.
    """
    params = params or {}
    issues = []
    for name, declaration in graph.params.items():
        default = declaration.default
        if name in params or not isinstance(default, str) or not default.startswith(EXAMPLES_PREFIX):
            continue
        if not Path(default).exists():
            issues.append(GraphIssue(
                f"params.{name}.default",
                f"{default} is sample data of the sfumato source repository and is not in {Path.cwd()}; "
                f"run from the root of a clone, or set it: --set {name}=PATH",
            ))
    return issues


def check_example_paths(graph: Any, params: dict[str, Any] | None = None) -> None:
    """Raise :class:`GraphValidationError` for :func:`missing_example_paths`."""
    issues = missing_example_paths(graph, params)
    if issues:
        raise GraphValidationError(issues, getattr(graph, "source", None))
