"""Lazy inputs: a node that decides, from some inputs, which of its other inputs it needs.

::

    @sfumato.lazy_inputs("if_true", "if_false", needs=lambda values: ["if_true" if values["condition"] else "if_false"],
                         same_type=("if_true", "if_false"))
    @sfumato.node("flow.if", category="flow")
    def if_(condition: bool, if_true: Any = None, if_false: Any = None) -> Any: ...

The scheduler runs a lazy node's other (eager) inputs first, then calls
``needs`` with their values (and the node's literals) and runs only the
branches feeding the inputs it names; the rest never run and the run report
shows them skipped. (After ComfyUI's lazy inputs and ``check_lazy_status``.)
Inputs not needed are absent from the node call, so they take their defaults.

``same_type`` names inputs whose linked types must agree (checked at
validation); the node's outputs of port type ``Any`` then carry that type, so
a consumer of a ``flow.if`` between two images is checked as taking an image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

LAZY_ATTRIBUTE = "__sfumato_lazy__"


@dataclass(frozen=True)
class LazyInputs:
    """Which inputs of a node are lazy, and how the node says which it needs.

    Attributes:
        names: the lazy inputs.
        needs: called with the node's literal and eager input values (a dict by
            input name); returns the lazy inputs to compute.
        same_type: inputs whose types must agree; ``Any`` outputs take their type.
    """

    names: tuple[str, ...]
    needs: Callable[[dict[str, Any]], Iterable[str]]
    same_type: tuple[str, ...] = ()


def lazy_inputs(*names: str, needs: Callable[[dict[str, Any]], Iterable[str]],
                same_type: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Mark inputs of a node function (or class) as lazy; see the module docstring.

    Apply it above or below ``@sfumato.node``; the function is returned unchanged.
    """
    if not names:
        raise ValueError("lazy_inputs needs at least one input name")

    def decorate(target: Any) -> Any:
        setattr(target, LAZY_ATTRIBUTE, LazyInputs(tuple(names), needs, tuple(same_type)))
        return target

    return decorate


def lazy_of(spec: Any) -> LazyInputs | None:
    """The lazy inputs of a node type (a ``NodeSpec``), or ``None``."""
    return getattr(spec.implementation, LAZY_ATTRIBUTE, None)
