"""Where nodes may read and write files: one path policy for every node.

A node that takes a file or folder declares it with a path annotation::

    @node("image.load")
    def load(path: ReadablePath) -> ImageBatch: ...

    @node("index.write")
    def write(index: WritablePath, context: RunContext) -> dict: ...

and resolves any path it finds by itself (files inside a folder, paths listed
in a manifest or an index) through ``context.readable_path(p)`` /
``context.writable_path(p)``. The engine checks declared inputs against its
:class:`PathPolicy`: literal values at validation (a violation is a graph issue
naming node, input and path, before anything runs), values that arrive over a
link just before the node runs.

The default policy allows everything: on the command line and in the Python
API sfumato runs on the user's own machine for the user. A server confines
its jobs with :meth:`PathPolicy.confined`: reads only under its allowed roots,
writes only under its write roots. Symbolic links are resolved before a path
is compared with the roots, so a link inside an allowed folder that points
outside it is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Literal

from ..errors import GraphIssue, SfumatoError

if TYPE_CHECKING:
    from ..run.planning import PlannedNode

Access = Literal["read", "write"]


class PathNotAllowedError(SfumatoError, PermissionError):
    """A node asked to read or write a path that the run's path policy does not allow."""


@dataclass(frozen=True)
class PathInput:
    """``Annotated`` metadata marking a text input as a file path: ``Annotated[str, PathInput("read")]``.

    Use the aliases :data:`ReadablePath` and :data:`WritablePath`.
    ``access="write"`` means the node creates or changes files there (it may
    also read them back).
    """

    access: Access = "read"


#: A text input naming a file or folder the node reads.
ReadablePath = Annotated[str, PathInput("read")]
#: A text input naming a file or folder the node writes (and may read back).
WritablePath = Annotated[str, PathInput("write")]


def _resolve(path: str | os.PathLike[str]) -> Path:
    """Absolute, with ``~`` expanded and every existing symbolic link followed."""
    return Path(path).expanduser().resolve()


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


@dataclass(frozen=True)
class PathPolicy:
    """Which folders nodes may read from and write into.

    ``None`` for a set of roots means "anywhere" (the default, for the user's
    own machine). Build a confined policy with :meth:`confined`.

    Attributes:
        read_roots: folders (resolved) under which reading is allowed, or ``None``.
        write_roots: folders (resolved) under which writing is allowed, or ``None``.
    """

    read_roots: tuple[Path, ...] | None = None
    write_roots: tuple[Path, ...] | None = None

    @classmethod
    def unrestricted(cls) -> "PathPolicy":
        """Read and write anywhere the process may (the CLI and Python API default)."""
        return cls()

    @classmethod
    def confined(cls, *, read: Iterable[str | os.PathLike[str]] = (),
                 write: Iterable[str | os.PathLike[str]] = ()) -> "PathPolicy":
        """Reads only under ``read`` or ``write`` roots; writes only under ``write`` roots.

        Roots are resolved now (symbolic links followed), so a root that is a
        link is compared by its target.
        """
        write_roots = tuple(dict.fromkeys(_resolve(root) for root in write))
        read_roots = tuple(dict.fromkeys((*(_resolve(root) for root in read), *write_roots)))
        return cls(read_roots, write_roots)

    @property
    def restricted(self) -> bool:
        """Whether any path can be refused (false for the default policy)."""
        return self.read_roots is not None or self.write_roots is not None

    def problem(self, path: str | os.PathLike[str], access: Access = "read") -> str | None:
        """Why ``path`` may not be used for ``access``, or ``None`` when it may."""
        roots = self.write_roots if access == "write" else self.read_roots
        if roots is None:
            return None
        try:
            resolved = _resolve(path)
        except (OSError, RuntimeError, ValueError) as error:  # a link loop, a NUL byte, no home folder
            return f"path {str(path)!r} cannot be resolved: {error}"
        if _inside(resolved, roots):
            return None
        doing = "writing" if access == "write" else "reading"
        allowed = ", ".join(str(root) for root in roots) or "none"
        shown = repr(str(path)) if str(resolved) == str(path) else f"{str(path)!r} (resolves to {str(resolved)!r})"
        return f"{doing} {shown} is not allowed: it is outside the allowed folders ({allowed})"

    def check(self, path: str | os.PathLike[str], access: Access = "read") -> Path:
        """The resolved path, or :class:`PathNotAllowedError` saying why it is refused."""
        problem = self.problem(path, access)
        if problem:
            raise PathNotAllowedError(problem)
        return _resolve(path) if self.restricted else Path(path).expanduser()


def path_inputs(spec: Any) -> tuple[tuple[str, Access], ...]:
    """The inputs of a node type declared as paths, with their access."""
    return tuple((name, item.path_access) for name, item in spec.inputs.items() if item.path_access)


def path_issues(planned: "dict[str, PlannedNode]", policy: PathPolicy | None) -> list[GraphIssue]:
    """Validation issues for literal path inputs (and path parameters) the policy refuses."""
    if policy is None or not policy.restricted:
        return []
    issues = []
    for node_id, node in planned.items():
        for name, access in path_inputs(node.spec):
            value = node.literals.get(name)
            if not isinstance(value, (str, os.PathLike)):
                continue
            problem = policy.problem(value, access)
            if problem:
                issues.append(GraphIssue(f"nodes.{node_id}.inputs.{name}", f"{node.spec.id}.{name}: {problem}",
                                         node_id))
    return issues
