"""Declaring node types from plain functions or classes.

::

    @node("image.sharpen", version=1, category="postprocess")
    def sharpen(images: ImageBatch,
                radius: Annotated[float, Field(ge=0, le=20)] = 2.0) -> ImageBatch:
        '''Sharpen with an unsharp mask.'''

Inputs come from the parameters, outputs from the return annotation (or the
``outputs=`` mapping for several named outputs), constraints from pydantic
``Field``\\ s, descriptions from the docstring. A parameter annotated
:class:`RunContext` receives the run context and is not a port.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ..errors import NodeDefinitionError
from .context import RunContext
from .paths import PathInput

NODE_ATTRIBUTE = "__sfumato_node__"
_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks an input without a default.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Port:
    """``Annotated`` metadata naming a port type explicitly: ``Annotated[Embedding, Port("ClipText")]``."""

    name: str


@dataclass
class InputSpec:
    """One input of a node type: a port that can also take a literal value."""

    name: str
    annotation: Any
    default: Any = REQUIRED
    description: str = ""
    field_info: FieldInfo | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    port: str = ""
    #: The Python type of literal values (``str`` for ``Literal["a", "b"]``).
    literal_type: Any = None
    #: ``"read"`` or ``"write"`` for a file path input (:data:`sfumato.ReadablePath`), checked
    #: against the run's path policy; ``""`` for other inputs.
    path_access: str = ""
    _adapter: TypeAdapter | None = field(default=None, repr=False)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def adapter(self) -> TypeAdapter:
        """The pydantic validator for literal values (built on first use)."""
        if self._adapter is None:
            annotation = self.annotation
            if self.optional:
                annotation = annotation | None
            if self.field_info is not None:
                annotation = Annotated[annotation, self.field_info]
            self._adapter = TypeAdapter(annotation)
        return self._adapter

    def validate_literal(self, value: Any) -> Any:
        """Return the validated value or raise ``ValueError`` with a readable reason."""
        try:
            return self.adapter().validate_python(value, strict=False)
        except ValidationError as error:
            reasons = "; ".join(e["msg"] for e in error.errors())
            raise ValueError(reasons) from None

    def constraints(self) -> dict[str, Any]:
        """Range and length limits declared through pydantic, for listings."""
        found: dict[str, Any] = {}
        if self.field_info is not None:
            for item in self.field_info.metadata:
                for key in ("ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of"):
                    if getattr(item, key, None) is not None:
                        found[key] = getattr(item, key)
        if self.choices:
            found["choices"] = list(self.choices)
        return found


@dataclass
class OutputSpec:
    """One output of a node type."""

    name: str
    annotation: Any
    description: str = ""
    port: str = ""


@dataclass
class NodeSpec:
    """Everything the engine knows about one node type.

    Attributes:
        id: dotted id used in graph files (``image.sharpen``).
        version: bumped when outputs change for the same inputs; part of the cache key.
        category: groups node types in listings.
        output_node: the node has a side effect (saves a file); it runs even
            though nothing consumes its outputs.
        volatile: the node reads something that changes on its own (clock,
            unseeded randomness); it is never served from the cache.
        fingerprint: for nodes that read files: called with the literal inputs,
            returns a string that changes when what it reads changes.
        batch: ``batch(calls) -> results``: runs several calls (each a dict of
            keyword arguments, as the node function takes them) as one batch and
            returns their results in order. A sweep merges runs that differ only
            in such a node's inputs into batched calls.
        cacheable_to_disk: its outputs may be stored in the on-disk cache.
        describe_outputs: called at validation with the node's literal inputs;
            returns attributes of its outputs (``{"embedding": {"model": ...,
            "dimension": 384}}``) so that consumers can check them before the run.
        expect_inputs: called likewise; returns the attributes its inputs
            require. A link whose producer describes a different value for the
            same attribute is a validation error naming both.
        context_keys: run settings the node's results depend on, read through
            its context: any of ``device``, ``dtype``, ``seed``, ``output_dir``,
            ``params``, ``graph``. They join its cache signature. By default a
            node with a context depends on device and dtype; an output node also
            on seed, output folder, parameters and graph (it writes them out).
            Reading an undeclared one raises ``UndeclaredContextReadError``
            (unless the node is volatile): an undeclared setting would not be in
            the signature, and the cache would hand back a stale result.
        plugin: the plugin that registered it (set at registration).
    """

    id: str
    version: int
    category: str
    description: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    implementation: Any
    is_class: bool = False
    context_param: str | None = None
    output_node: bool = False
    volatile: bool = False
    fingerprint: Callable[[dict[str, Any]], str] | None = None
    is_cache_entry_valid: Callable[[dict[str, Any]], bool] | None = None
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None = None
    cacheable_to_disk: bool = True
    describe_outputs: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    expect_inputs: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    context_keys: tuple[str, ...] = ()
    single_output: bool = True
    display_name: str = ""
    plugin: str = ""

    @property
    def batchable(self) -> bool:
        return self.batch is not None

    @property
    def summary(self) -> str:
        return self.description.strip().split("\n\n")[0].replace("\n", " ") if self.description else ""

    def make_callable(self) -> Callable[..., Any]:
        """A callable that runs the node; class nodes get one long-lived instance."""
        if self.is_class:
            return self.implementation().run
        return self.implementation


def _docstring_sections(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument texts."""
    doc = inspect.cleandoc(doc or "")
    match = re.search(r"^(Args|Arguments|Parameters|Inputs):\s*$", doc, flags=re.MULTILINE)
    if not match:
        return doc, {}
    description = doc[: match.start()].strip()
    rest = doc[match.end():]
    end = re.search(r"^\S.*:\s*$", rest, flags=re.MULTILINE)
    block = rest[: end.start()] if end else rest
    arguments: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        item = re.match(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if item and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = item.group(1)
            arguments[current] = item.group(2).strip()
        elif current and line.strip():
            arguments[current] += " " + line.strip()
    return description, arguments


def _unwrap(annotation: Any) -> tuple[Any, FieldInfo | None, str | None, bool]:
    """Split ``Annotated``/``Optional`` wrappers: (base type, field info, port name, optional)."""
    field_info: FieldInfo | None = None
    port_name: str | None = None
    optional = False
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, FieldInfo):
                field_info = extra
            elif isinstance(extra, Port):
                port_name = extra.name
        annotation = base
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1 and len(get_args(annotation)) == 2:
            optional = True
            inner, inner_field, inner_port, _ = _unwrap(members[0])
            return inner, field_info or inner_field, port_name or inner_port, True
    return annotation, field_info, port_name, optional


def _path_access(annotation: Any) -> str:
    """``read``/``write`` when the annotation carries :class:`PathInput` (also inside ``Optional``)."""
    if get_origin(annotation) is Annotated:
        for extra in get_args(annotation)[1:]:
            if isinstance(extra, PathInput):
                return extra.access
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (typing.Union, types.UnionType):
        for member in get_args(annotation):
            found = _path_access(member)
            if found:
                return found
    return ""


def _literal_base(annotation: Any) -> tuple[Any, tuple[Any, ...] | None]:
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    return annotation, None


def _input_from_parameter(parameter: inspect.Parameter, annotation: Any, docs: dict[str, str]) -> InputSpec:
    base, field_info, port_name, optional = _unwrap(annotation)
    base_type, choices = _literal_base(base)
    default = parameter.default
    if isinstance(default, FieldInfo):
        field_info = default
        default = REQUIRED if default.is_required() else default.get_default(call_default_factory=True)
    elif default is inspect.Parameter.empty:
        default = REQUIRED
    if optional and default is REQUIRED:
        default = None
    description = (field_info.description if field_info and field_info.description else "") or docs.get(parameter.name, "")
    return InputSpec(
        name=parameter.name,
        annotation=base,
        default=default,
        description=description,
        field_info=field_info,
        choices=choices,
        optional=optional,
        port=port_name or "",
        literal_type=base_type,
        path_access=_path_access(annotation),
    )


def node(
    id: str,
    *,
    version: int = 1,
    category: str = "misc",
    outputs: dict[str, Any] | None = None,
    output: str | None = None,
    output_node: bool = False,
    volatile: bool = False,
    fingerprint: Callable[[dict[str, Any]], str] | None = None,
    is_cache_entry_valid: Callable[[dict[str, Any]], bool] | None = None,
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None = None,
    cacheable_to_disk: bool = True,
    describe_outputs: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None,
    expect_inputs: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None,
    context_keys: tuple[str, ...] | None = None,
    display_name: str = "",
) -> Callable[[Any], Any]:
    """Declare a node type from a function, or from a class with a ``run`` method.

    Args:
        id: dotted id used in graph files, e.g. ``image.sharpen``.
        version: bump it when the node's results change for the same inputs.
        category: where ``sfumato nodes`` lists it.
        outputs: several named outputs, ``{"text": str, "weights": PromptWeights}``;
            the function then returns a dict with those keys.
        output: the name of the single output (default: from its port type).
        output_node: the node has a side effect and always belongs to the run.
        volatile: never serve this node from the cache.
        fingerprint: for nodes that read files; see :class:`NodeSpec`.
        is_cache_entry_valid: checks a cached result is still usable (e.g. files exist).
        batch: a function running several calls as one batch; see :class:`NodeSpec`.
        cacheable_to_disk: allow its outputs in the on-disk cache.
        describe_outputs: static attributes of outputs; see :class:`NodeSpec`.
        expect_inputs: static requirements on inputs; see :class:`NodeSpec`.
        context_keys: run settings its results depend on; see :class:`NodeSpec`.
        display_name: a human title for listings.

    The decorated object is returned unchanged apart from a ``__sfumato_node__``
    attribute holding its :class:`NodeSpec`, so it stays callable in tests.
    """
    if not _ID_PATTERN.match(id):
        raise NodeDefinitionError(
            f"node id {id!r} must be dotted lower-case words, like 'image.sharpen'"
        )

    def decorate(target: Any) -> Any:
        is_class = inspect.isclass(target)
        function = target.run if is_class else target
        if is_class and not callable(getattr(target, "run", None)):
            raise NodeDefinitionError(f"node class {target.__name__} for {id!r} needs a run() method")
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception as error:  # noqa: BLE001 - report any annotation problem the same way
            raise NodeDefinitionError(f"cannot read the type hints of {id!r}: {error}") from error
        description, docs = _docstring_sections(target.__doc__ or function.__doc__ or "")
        signature = inspect.signature(function)
        inputs: dict[str, InputSpec] = {}
        context_param = None
        for index, parameter in enumerate(signature.parameters.values()):
            if is_class and index == 0:
                continue  # self
            if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise NodeDefinitionError(f"node {id!r}: *args/**kwargs cannot be ports ({parameter.name})")
            if parameter.name not in hints:
                raise NodeDefinitionError(f"node {id!r}: parameter {parameter.name!r} needs a type annotation")
            annotation = hints[parameter.name]
            if annotation is RunContext:
                context_param = parameter.name
                continue
            inputs[parameter.name] = _input_from_parameter(parameter, annotation, docs)
        if outputs is not None:
            output_specs = {
                name: OutputSpec(name, _unwrap(annotation)[0], port=_unwrap(annotation)[2] or "")
                for name, annotation in outputs.items()
            }
            single = False
        else:
            returned = hints.get("return", inspect.Signature.empty)
            if returned in (inspect.Signature.empty, None, type(None)):
                output_specs = {}
            else:
                base, _, port_name, _ = _unwrap(returned)
                output_specs = {output or "": OutputSpec(output or "", base, port=port_name or "")}
            single = True
        spec = NodeSpec(
            id=id, version=version, category=category, description=description,
            inputs=inputs, outputs=output_specs, implementation=target, is_class=is_class,
            context_param=context_param, output_node=output_node, volatile=volatile,
            fingerprint=fingerprint, is_cache_entry_valid=is_cache_entry_valid,
            batch=batch, cacheable_to_disk=cacheable_to_disk, single_output=single,
            describe_outputs=describe_outputs, expect_inputs=expect_inputs,
            context_keys=context_keys if context_keys is not None else (
                ("device", "dtype", "seed", "output_dir", "params", "graph") if output_node else ("device", "dtype")),
            display_name=display_name or id,
        )
        setattr(target, NODE_ATTRIBUTE, spec)
        return target

    return decorate


def spec_of(obj: Any) -> NodeSpec:
    """The :class:`NodeSpec` of a decorated function or class (or a spec itself)."""
    if isinstance(obj, NodeSpec):
        return obj
    spec = getattr(obj, NODE_ATTRIBUTE, None)
    if spec is None:
        raise NodeDefinitionError(f"{obj!r} is not a node type; decorate it with @sfumato.node(...)")
    return spec
