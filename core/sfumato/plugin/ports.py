"""Port types: the named types of values that flow on edges.

A port type names a Python class, may declare parent types (a link from a
subtype to its parent is valid), may be written as a JSON literal in a graph
file, and may check a value further than its class when it arrives.
``Any`` accepts everything; declared conversions (``Int`` to ``Float``) make
other links valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import NodeDefinitionError
from .values import Conditioning, Embedding, ImageBatch, Latent, PromptWeights, Regions, Retrieved

ANY = "Any"


@dataclass(frozen=True)
class PortType:
    """A named type of value on an edge.

    Attributes:
        name: the name used in schemas and error messages (``Images``).
        python_type: the class values must be instances of (``object`` for any).
        description: one line for ``sfumato nodes show``.
        parents: names of port types this one may be linked to as a subtype.
        literal: values can be written directly in a graph file (JSON).
        check: optional extra check on an arriving value; returns an error
            message, or ``None`` when the value is fine.
        default_output_name: the output name a node gets when it returns this
            type without naming its output.
    """

    name: str
    python_type: type | tuple[type, ...]
    description: str = ""
    parents: tuple[str, ...] = ()
    literal: bool = False
    check: Callable[[Any], str | None] | None = None
    default_output_name: str = ""

    @property
    def output_name(self) -> str:
        return self.default_output_name or self.name.lower()

    def problem_with(self, value: Any) -> str | None:
        """Why ``value`` is not a valid value of this type, or ``None``."""
        if self.python_type is not object and not isinstance(value, self.python_type):
            return f"expected {self.name}, got {type(value).__name__}"
        return self.check(value) if self.check else None


def _is_text_list(value: Any) -> str | None:
    if not all(isinstance(item, str) for item in value):
        return "expected a list of strings"
    return None


def _not_bool(value: Any) -> str | None:
    # bool is a subclass of int in Python; a flag is not a count.
    return "expected a number, got a bool" if isinstance(value, bool) else None


BUILTIN_PORT_TYPES: tuple[PortType, ...] = (
    PortType(ANY, object, "any value"),
    PortType("Text", str, "a string", literal=True),
    PortType("Int", int, "an integer", literal=True, check=_not_bool, default_output_name="value"),
    PortType("Float", (float, int), "a number", literal=True, check=_not_bool, default_output_name="value"),
    PortType("Bool", bool, "true or false", literal=True, default_output_name="value"),
    PortType("TextList", (list, tuple), "a list of strings", literal=True, check=_is_text_list,
             default_output_name="texts"),
    PortType("JSON", (dict, list, str, int, float, bool), "any JSON value", literal=True,
             default_output_name="data"),
    PortType("Images", ImageBatch, "an ordered batch of images"),
    PortType("Embedding", Embedding, "unit vectors with their model and dimension"),
    PortType("Conditioning", Conditioning, "token-level encoder states for a generator"),
    PortType("Latent", Latent, "autoencoder latents"),
    PortType("Retrieved", Retrieved, "ranked retrieval hits per query"),
    PortType("PromptWeights", PromptWeights, "a prompt split into weighted phrases",
             default_output_name="weights"),
    PortType("Regions", Regions, "boxes where each region prompt acts, for regional generation"),
)

#: Python annotations that map straight to a built-in port type.
BUILTIN_ANNOTATIONS: dict[Any, str] = {
    str: "Text",
    int: "Int",
    float: "Float",
    bool: "Bool",
    list[str]: "TextList",
    dict: "JSON",
    ImageBatch: "Images",
    Embedding: "Embedding",
    Conditioning: "Conditioning",
    Latent: "Latent",
    Retrieved: "Retrieved",
    PromptWeights: "PromptWeights",
    Regions: "Regions",
    Any: ANY,
}


def _int_to_float(value: int) -> float:
    return float(value)


def _text_to_list(value: str) -> list[str]:
    return [value]


@dataclass
class PortTypeRegistry:
    """Every known port type, with the conversions between them."""

    types: dict[str, PortType] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    conversions: dict[tuple[str, str], Callable[[Any], Any]] = field(default_factory=dict)
    _compatible: dict[tuple[str, str], bool] = field(default_factory=dict)
    _checkers: dict[str, Callable[[Any], str | None] | None] = field(default_factory=dict)

    @classmethod
    def with_builtins(cls) -> "PortTypeRegistry":
        registry = cls()
        for port in BUILTIN_PORT_TYPES:
            registry.register(port, owner="sfumato")
        registry.add_conversion("Int", "Float", _int_to_float)
        registry.add_conversion("Text", "TextList", _text_to_list)
        return registry

    def register(self, port: PortType, owner: str) -> None:
        """Add a port type; a name already taken by another owner is an error naming both."""
        if port.name in self.types and self.owners[port.name] != owner:
            raise NodeDefinitionError(
                f"port type {port.name!r} is defined by both {self.owners[port.name]!r} and {owner!r}"
            )
        self.types[port.name] = port
        self.owners[port.name] = owner
        self._compatible.clear()
        self._checkers.clear()

    def add_conversion(self, source: str, target: str, function: Callable[[Any], Any]) -> None:
        self.conversions[(source, target)] = function
        self._compatible.clear()

    def get(self, name: str) -> PortType:
        return self.types[name]

    def checker(self, name: str) -> Callable[[Any], str | None] | None:
        """``PortType.problem_with`` of port type ``name``, or ``None`` when it takes every value.

        Planning puts it on each link and output once, so running a node does
        not look its ports up again.
        """
        if name not in self._checkers:
            port = self.types[name]
            self._checkers[name] = None if port.python_type is object and port.check is None else port.problem_with
        return self._checkers[name]

    def name_for_annotation(self, annotation: Any) -> str | None:
        """The port type name for a Python annotation, or ``None`` if unknown."""
        if annotation in BUILTIN_ANNOTATIONS:
            return BUILTIN_ANNOTATIONS[annotation]
        for port in self.types.values():
            if port.python_type is annotation:
                return port.name
        return None

    def _ancestors(self, name: str) -> set[str]:
        seen, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.types:
                continue
            seen.add(current)
            stack.extend(self.types[current].parents)
        return seen

    def is_compatible(self, source: str, target: str) -> bool:
        """Whether an output of type ``source`` may feed an input of type ``target``."""
        key = (source, target)
        if key not in self._compatible:
            self._compatible[key] = (
                target == ANY or source == ANY or target in self._ancestors(source)
                or key in self.conversions
            )
        return self._compatible[key]

    def converter(self, source: str, target: str) -> Callable[[Any], Any] | None:
        """The conversion function for a link, or ``None`` when values pass as they are."""
        if source == target or target == ANY or source == ANY:
            return None
        if target in self._ancestors(source):
            return None
        return self.conversions.get((source, target))
