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

How results are cached is one :class:`CachePolicy` (``cache=``); checks that
run at validation (``describe_outputs``, ``expect_inputs``) receive the literal
inputs and a :class:`ValidationContext`. Node functions are plain (not
``async``): the scheduler calls them on its worker threads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ..errors import NodeDefinitionError
from .context import RunContext
from .lazy import LazyInputs, lazy_of
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


#: The run settings a node may read through its context (see :attr:`CachePolicy.context_keys`).
CONTEXT_KEYS = ("device", "dtype", "seed", "output_dir", "params", "graph", "run_index")
_DEFAULT_CONTEXT_KEYS = ("device", "dtype")
_OUTPUT_NODE_CONTEXT_KEYS = ("device", "dtype", "seed", "output_dir", "params", "graph")


@dataclass(frozen=True)
class CachePolicy:
    """How the engine caches one node type's results: ``@node(..., cache=CachePolicy...)``.

    The default (``CachePolicy()``) suits a pure function of the node's inputs:
    its results are keyed by its inputs (and, for a node with a run context,
    by device and dtype) and kept in memory and in the disk cache. The named
    constructors cover the other cases::

        @node("image.load", cache=CachePolicy.reads_files(_files_fingerprint))
        @node("test.clock", cache=CachePolicy.volatile())
        @node("tint.noise", cache=CachePolicy.reads_context("seed"))

    Attributes:
        always_rerun: the node reads something that changes on its own (clock,
            unseeded randomness); it is never served from the cache, and may
            read any run setting.
        fingerprint: for nodes that read files: called at planning with the
            literal inputs, returns a string that changes when what the node
            would read changes; it joins the cache signature.
        is_entry_valid: called with a cached result before it is reused;
            ``False`` re-runs the node (a saver whose files were deleted).
        to_disk: the node's outputs may be stored in the on-disk cache.
        context_keys: run settings the node's results depend on, read through
            its context: any of :data:`CONTEXT_KEYS`. They join its cache
            signature. ``None`` (the default) means device and dtype; for an
            output node also seed, output folder, parameters and graph (it
            writes them out). Reading an undeclared one raises
            ``UndeclaredContextReadError`` (unless the node always reruns): an
            undeclared setting would not be in the signature, and the cache
            would hand back a stale result.
    """

    always_rerun: bool = False
    fingerprint: Callable[[dict[str, Any]], str] | None = None
    is_entry_valid: Callable[[dict[str, Any]], bool] | None = None
    to_disk: bool = True
    context_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.context_keys is not None:
            if isinstance(self.context_keys, str):
                raise NodeDefinitionError(f"context_keys must be a tuple of names, not the string "
                                          f"{self.context_keys!r}; write ({self.context_keys!r},)")
            keys = tuple(self.context_keys)
            unknown = [key for key in keys if key not in CONTEXT_KEYS]
            if unknown:
                raise NodeDefinitionError(f"unknown context key(s) {', '.join(map(repr, unknown))}; "
                                          f"a node may read {', '.join(CONTEXT_KEYS)}")
            object.__setattr__(self, "context_keys", keys)
        for name in ("fingerprint", "is_entry_valid"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise NodeDefinitionError(f"CachePolicy {name} must be a function of the literal inputs, "
                                          f"got {value!r}")
        if self.always_rerun and self.fingerprint is not None:
            # Silently ignoring it would hide a mistake: one of the two is not what the author meant.
            raise NodeDefinitionError("a node that always reruns is never cached; its fingerprint would be ignored")

    @classmethod
    def volatile(cls) -> CachePolicy:
        """Never cached: the node reads the clock, unseeded randomness or another changing source."""
        return cls(always_rerun=True)

    @classmethod
    def reads_files(cls, fingerprint: Callable[[dict[str, Any]], str], *,
                    context_keys: tuple[str, ...] | None = None) -> CachePolicy:
        """Cached while ``fingerprint(literal_inputs)`` (say, paths, sizes and times) stays the same."""
        return cls(fingerprint=fingerprint, context_keys=context_keys)

    @classmethod
    def writes_files(cls, is_entry_valid: Callable[[dict[str, Any]], bool], *,
                     context_keys: tuple[str, ...] | None = None) -> CachePolicy:
        """A saver: a cached result counts only while ``is_entry_valid(outputs)`` (its files still exist)."""
        return cls(is_entry_valid=is_entry_valid, context_keys=context_keys)

    @classmethod
    def reads_context(cls, *keys: str) -> CachePolicy:
        """Keyed by exactly these run settings (``"seed"``, ``"params"``, ...); none for ``reads_context()``."""
        return cls(context_keys=keys)

    def resolved(self, *, output_node: bool) -> CachePolicy:
        """This policy with the default context keys filled in."""
        if self.context_keys is not None:
            return self
        return dataclasses.replace(self, context_keys=_OUTPUT_NODE_CONTEXT_KEYS if output_node
                                   else _DEFAULT_CONTEXT_KEYS)


@dataclass
class ValidationContext:
    """What a validation callback (``describe_outputs``, ``expect_inputs``) may consult.

    Callbacks are called as ``callback(literal_inputs, context)`` when a graph
    is validated, before anything loads; they read the registry and model
    sources from here rather than from a process-wide registry, so a graph is
    checked against the plugins that will run it.

    Attributes:
        registry: the :class:`~sfumato.Registry` validating the graph.
        node_id: the graph node being checked.
        given: the inputs the graph sets (literal, link or parameter); the
            others take their defaults.
    """

    registry: Any
    node_id: str = ""
    given: frozenset[str] = frozenset()
    #: ``(severity, input, message)`` reported through :meth:`warn` and :meth:`problem`.
    notes: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def model_sources(self) -> Mapping[str, Any]:
        """The registered model sources (:class:`~sfumato.ModelSource`) by name."""
        return self.registry.models

    def model_folder(self, name: str) -> Path | None:
        """The local folder a model name or path points to, or ``None`` (a hub id, nothing there)."""
        source = self.model_sources.get(name)
        try:
            path = source.path() if source is not None else Path(name).expanduser()
            return path if path.is_dir() else None
        except (OSError, ValueError, RuntimeError):  # a malformed path names no folder
            return None

    def warn(self, message: str, input: str = "") -> None:
        """Report something the user should know that does not stop the run (an input a backend ignores)."""
        self.notes.append(("warning", input, message))

    def problem(self, message: str, input: str = "") -> None:
        """Report a validation error on this node (or one of its inputs): the graph does not run."""
        self.notes.append(("error", input, message))


ValidationCallback = Callable[[dict[str, Any], ValidationContext], dict[str, dict[str, Any]]]


@dataclass
class NodeSpec:
    """Everything the engine knows about one node type.

    Attributes:
        id: dotted id used in graph files (``image.sharpen``).
        version: bumped when outputs change for the same inputs; part of the cache key.
        category: groups node types in listings.
        output_node: the node has a side effect (saves a file); it runs even
            though nothing consumes its outputs.
        cache: how its results are cached (:class:`CachePolicy`, context keys resolved).
        batch: ``batch(calls) -> results``: runs several calls (each a dict of
            keyword arguments, as the node function takes them) as one batch and
            returns their results in order. A sweep merges runs that differ only
            in such a node's inputs into batched calls.
        describe_outputs: called at validation as ``describe_outputs(inputs,
            context)`` with the node's literal inputs and a
            :class:`ValidationContext`; returns attributes of its outputs
            (``{"embedding": {"model": ..., "dimension": 384}}``) so that
            consumers can check them before the run.
        expect_inputs: called likewise; returns the attributes its inputs
            require. A link whose producer describes a different value for the
            same attribute is a validation error naming both.
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
    cache: CachePolicy = field(default_factory=lambda: CachePolicy().resolved(output_node=False))
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None = None
    describe_outputs: ValidationCallback | None = None
    expect_inputs: ValidationCallback | None = None
    single_output: bool = True
    plugin: str = ""

    # Read-only views of the cache policy, for the engine's hot paths.
    @property
    def volatile(self) -> bool:
        return self.cache.always_rerun

    @property
    def fingerprint(self) -> Callable[[dict[str, Any]], str] | None:
        return self.cache.fingerprint

    @property
    def is_cache_entry_valid(self) -> Callable[[dict[str, Any]], bool] | None:
        return self.cache.is_entry_valid

    @property
    def cacheable_to_disk(self) -> bool:
        return self.cache.to_disk

    @property
    def context_keys(self) -> tuple[str, ...]:
        return self.cache.context_keys or ()

    @property
    def summary(self) -> str:
        return self.description.strip().split("\n\n")[0].replace("\n", " ") if self.description else ""

    @functools.cached_property
    def lazy(self) -> "LazyInputs | None":
        """Inputs this node resolves on demand (``sfumato.lazy_inputs``), or ``None``.

        Looked up once: the scheduler asks for every node it queues.
        """
        return lazy_of(self)

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


#: ``@node`` keywords replaced by :class:`CachePolicy`, and the policy field each became.
_LEGACY_CACHE_OPTIONS = {"volatile": "always_rerun", "fingerprint": "fingerprint",
                         "is_cache_entry_valid": "is_entry_valid", "cacheable_to_disk": "to_disk",
                         "context_keys": "context_keys"}


def _legacy_cache_policy(id: str, cache: CachePolicy | None, legacy: dict[str, Any]) -> CachePolicy | None:
    """Turn the pre-``CachePolicy`` keywords into a policy, with a DeprecationWarning (kept for one release)."""
    unknown = sorted(set(legacy) - set(_LEGACY_CACHE_OPTIONS))
    if unknown:
        raise NodeDefinitionError(
            f"node {id!r}: unknown @node option(s) {', '.join(map(repr, unknown))} (options: version, category, "
            "outputs, output, output_node, cache, batch, describe_outputs, expect_inputs)")
    if not legacy:
        return cache
    if cache is not None:
        raise NodeDefinitionError(f"node {id!r}: give cache=CachePolicy(...) or the old keywords "
                                  f"{', '.join(sorted(legacy))}, not both")
    warnings.warn(f"node {id!r}: @node({', '.join(f'{k}=...' for k in sorted(legacy))}) is deprecated and will "
                  "be removed in the next release; pass cache=sfumato.CachePolicy(...) instead",
                  DeprecationWarning, stacklevel=3)
    return CachePolicy(**{_LEGACY_CACHE_OPTIONS[key]: value for key, value in legacy.items()})


def _two_argument_callback(id: str, role: str, callback: Callable[..., Any] | None) -> ValidationCallback | None:
    """``callback(inputs, context)``; a one-argument callback (the old form) is wrapped, with a warning."""
    if callback is None:
        return None
    if not callable(callback):
        raise NodeDefinitionError(f"node {id!r}: {role} must be a function, got {callback!r}")
    try:
        parameters = list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: assume the current form
        return callback
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters) or len(positional) >= 2:
        return callback
    warnings.warn(f"node {id!r}: {role} takes only the inputs; it now also receives a ValidationContext "
                  f"({role}(inputs, context)). The one-argument form will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    return lambda inputs, context: callback(inputs)


def _refuse_async(id: str, function: Any, role: str) -> None:
    # The scheduler calls nodes (and batch functions) on its worker threads and keeps what they
    # return: an async function would hand back a coroutine that nobody awaits, cached as the output.
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise NodeDefinitionError(
            f"node {id!r}: {role} {getattr(function, '__qualname__', function)!r} is 'async def'; node functions "
            "run on the engine's worker threads and must be plain functions (call asyncio.run(...) inside one "
            "if it needs async I/O)")


def node(
    id: str,
    *,
    version: int = 1,
    category: str = "misc",
    outputs: dict[str, Any] | None = None,
    output: str | None = None,
    output_node: bool = False,
    cache: CachePolicy | None = None,
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None = None,
    describe_outputs: ValidationCallback | None = None,
    expect_inputs: ValidationCallback | None = None,
    **legacy: Any,
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
        cache: how its results are cached (:class:`CachePolicy`); default: by its inputs.
        batch: a function running several calls as one batch; see :class:`NodeSpec`.
        describe_outputs: ``(inputs, context) -> attributes of outputs``; see :class:`NodeSpec`.
        expect_inputs: ``(inputs, context) -> requirements on inputs``; see :class:`NodeSpec`.

    The keywords ``volatile``, ``fingerprint``, ``is_cache_entry_valid``,
    ``cacheable_to_disk`` and ``context_keys`` still work for one release, with
    a ``DeprecationWarning``; they became the fields of :class:`CachePolicy`.

    The decorated object is returned unchanged apart from a ``__sfumato_node__``
    attribute holding its :class:`NodeSpec`, so it stays callable in tests.
    ``async def`` functions are refused with :class:`NodeDefinitionError`.
    """
    if not _ID_PATTERN.match(id):
        raise NodeDefinitionError(
            f"node id {id!r} must be dotted lower-case words, like 'image.sharpen'"
        )
    cache = _legacy_cache_policy(id, cache, legacy)
    if cache is not None and not isinstance(cache, CachePolicy):
        raise NodeDefinitionError(f"node {id!r}: cache= takes a sfumato.CachePolicy, got {cache!r}")
    policy = (cache or CachePolicy()).resolved(output_node=output_node)
    describe_outputs = _two_argument_callback(id, "describe_outputs", describe_outputs)
    expect_inputs = _two_argument_callback(id, "expect_inputs", expect_inputs)
    if batch is not None:
        _refuse_async(id, batch, "its batch function")

    def decorate(target: Any) -> Any:
        is_class = inspect.isclass(target)
        function = target.run if is_class else target
        if is_class and not callable(getattr(target, "run", None)):
            raise NodeDefinitionError(f"node class {target.__name__} for {id!r} needs a run() method")
        _refuse_async(id, function, "its run() method" if is_class else "its function")
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
            context_param=context_param, output_node=output_node, cache=policy,
            batch=batch, single_output=single,
            describe_outputs=describe_outputs, expect_inputs=expect_inputs,
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
