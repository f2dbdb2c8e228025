"""Property-based fuzzing: whatever a graph file, a ``--set`` value or PNG metadata holds,
loading, validating and planning it ends in a valid result or a ``SfumatoError``, never
anything else.

Documents are generated structurally (node types from the real registry, their real
input and output names, links, parameter references and declarations) with random JSON
junk mixed in at every level, and also as raw text and bytes. Example counts are fixed
and small so the suite stays fast and repeatable; ``FUZZ_SCALE=10`` runs ten times as
many, and ``FUZZ_RANDOM=1`` draws new examples on every run instead of the same ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfumato import (
    Engine,
    Graph,
    Limits,
    MetadataError,
    SfumatoError,
    default_registry,
    plan_run,
    read_png_metadata,
    set_limits,
    validate_graph,
)
from sfumato.cli import main
from sfumato.graph.document import PARAM_TYPES, parse_graph_text
from sfumato.graph.params import PARAM_PORTS

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
RANDOM = bool(os.environ.get("FUZZ_RANDOM"))
REGISTRY = default_registry()
NODE_TYPES = sorted(REGISTRY.nodes)


def fuzz(examples: int) -> Any:
    """Settings for one fuzz test: ``examples`` (times FUZZ_SCALE), no deadline, no database."""
    return settings(max_examples=examples * SCALE, deadline=None, database=None, derandomize=not RANDOM,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- JSON junk ------------------------------------------------------------------------

#: Values that have crashed parsers and validators elsewhere: huge and negative
#: integers, non-finite floats, lone surrogates, control characters, path-like text.
NASTY_SCALARS = st.sampled_from([
    0, -1, 1, 2**31, 2**63, 2**64, -(2**64), 10**400, 1e308, -1e308, 1e-320,
    float("nan"), float("inf"), float("-inf"), "", " ", "\x00", "\ud800", "a\udfffb", "\u202e",
    "..", "/", "~nobody-here/x", "{x:>999999999}", "{", "}", "{0}", "{x!r}", "%s", "a" * 300,
    True, False, None,
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), NASTY_SCALARS,
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


DEEP = st.integers(min_value=60, max_value=900).map(nested)


# -- structural graph documents --------------------------------------------------------


PARAM_VALUES = {
    "str": st.text(max_size=12), "int": st.integers(-10, 10**6), "float": st.floats(-10, 100),
    "bool": st.booleans(), "list[str]": st.lists(st.text(max_size=5), max_size=3),
    "list[int]": st.lists(st.integers(-5, 5), max_size=3), "list[float]": st.lists(st.floats(-5, 5), max_size=3),
    "json": JUNK,
}
NASTY_TEXT = st.sampled_from(["~nobody-here/x", "a\x00b", "x" * 300, "/" * 300, "..", "\u202e", " ", "{x:>99999999}",
                              "(red:1e999)", "((((((((((a))))))))))", "[" * 200])
PORT_VALUES = {
    "Text": st.one_of(st.text(min_size=1, max_size=12), NASTY_TEXT), "Int": st.integers(-3, 600), "Float": st.floats(-3, 600),
    "Bool": st.booleans(), "TextList": st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3),
    "JSON": JUNK, "Any": JUNK,
}


@st.composite
def param_declarations(draw: st.DrawFn, wild: bool) -> dict[str, Any]:
    kind = draw(st.one_of(st.sampled_from(PARAM_TYPES), JUNK) if wild else st.sampled_from(PARAM_TYPES))
    declaration: dict[str, Any] = {"type": kind}
    if draw(st.integers(0, 3)) > 0:
        if wild:
            declaration["default"] = draw(st.one_of(JUNK, DEEP) if draw(st.integers(0, 9)) == 0 else JUNK)
        else:
            declaration["default"] = draw(PARAM_VALUES.get(kind, JUNK))
    for key in ("minimum", "maximum", "choices", "required"):
        if draw(st.integers(0, 5 if wild else 12)) == 0:
            declaration[key] = draw(JUNK)
    if wild and draw(st.integers(0, 9)) == 0:
        declaration[draw(st.text(max_size=6))] = draw(JUNK)
    return declaration


def _feedable(node_type: str, earlier: list[str]) -> bool:
    """Whether every required input of ``node_type`` that takes no literal has a compatible earlier output."""
    for item in REGISTRY.nodes[node_type].inputs.values():
        if item.required and not REGISTRY.ports.get(item.port).literal:
            if not any(REGISTRY.ports.is_compatible(output.port, item.port)
                       for other in earlier for output in REGISTRY.nodes[other].outputs.values()):
                return False
    return True


@st.composite
def graph_documents(draw: st.DrawFn, node_types: list[str] = NODE_TYPES, tame: bool = False) -> dict[str, Any]:
    """A graph document: mostly well-formed (so planning runs), with junk at random places.

    One in five is "wild": junk anywhere. The others use real node types with
    their real inputs, links to earlier nodes with a compatible output, and
    typed literals, with a rare junk value, so that many are valid and the
    planner and the nodes' validation-time checks run on them. ``tame`` documents
    are almost all valid (for running them): junk is rare, every parameter has a
    default of its type and feeds only inputs of a compatible port type.
    """
    chance = draw(st.randoms(use_true_random=True))  # plain odds: hypothesis favours edge values
    wild = not tame and chance.random() < 0.2
    junk_odds = 0.25 if wild else 0.002 if tame else 0.03

    def junk() -> bool:
        return chance.random() < junk_odds

    count = draw(st.integers(1, 6))
    node_ids = [draw(st.text(max_size=6)) if junk() else f"n{index}" for index in range(count)]
    node_ids = list(dict.fromkeys(node_ids))
    param_names = draw(st.lists(st.sampled_from(["prompt", "seed", "size", "p", ""]), max_size=3, unique=True))
    params = {name: draw(param_declarations(wild)) for name in param_names}
    if tame:
        params = {name: {"type": kind, "default": draw(PARAM_VALUES[kind])}
                  for name, kind in zip(param_names, draw(st.lists(st.sampled_from(PARAM_TYPES[:-1]),
                                                                    min_size=len(param_names),
                                                                    max_size=len(param_names))))}
    types: dict[str, str] = {}
    for position, node_id in enumerate(node_ids):
        # Mostly types whose linked-only inputs earlier nodes can feed, so the graph can be valid.
        feedable = [t for t in node_types if _feedable(t, [types[o] for o in node_ids[:position]])]
        types[node_id] = draw(st.sampled_from(node_types if junk() or not feedable else feedable))

    nodes: dict[str, Any] = {}
    for position, node_id in enumerate(node_ids):
        spec = REGISTRY.nodes[types[node_id]]
        earlier = node_ids[:position] if not junk() else node_ids
        inputs: dict[str, Any] = {}
        for name, item in spec.inputs.items():
            if not item.required and draw(st.integers(0, 2)) > 0:
                continue  # leave most optional inputs at their defaults
            sources = [(other, output.name) for other in earlier
                       for output in REGISTRY.nodes[types[other]].outputs.values()
                       if REGISTRY.ports.is_compatible(output.port, item.port)]
            declared = [p for p, d in params.items() if isinstance(d.get("type"), str)
                        and (not tame or REGISTRY.ports.is_compatible(PARAM_PORTS[d["type"]], item.port))]
            if junk():
                inputs[name] = draw(st.one_of(JUNK, DEEP, st.just({"from": f"{draw(st.sampled_from(node_ids))}."
                                                                           f"{draw(st.text(max_size=5))}"})))
            elif sources and (not REGISTRY.ports.get(item.port).literal or draw(st.booleans())):
                source, output = draw(st.sampled_from(sources))
                inputs[name] = {"from": f"{source}.{output}"}
            elif declared and draw(st.integers(0, 4)) == 0:
                inputs[name] = {"param": draw(st.sampled_from(declared))}
            elif not item.required and isinstance(item.default, (str, int, float, bool, list, dict)):
                inputs[name] = item.default
            elif REGISTRY.ports.get(item.port).literal:
                inputs[name] = draw(PORT_VALUES.get(item.port, JUNK))
        if junk():
            inputs[draw(st.text(max_size=6))] = draw(JUNK)
        entry: dict[str, Any] = {"type": types[node_id], "inputs": inputs}
        if junk():
            entry["meta"] = {"layout": draw(st.one_of(JUNK, DEEP))}
        if junk():
            entry[draw(st.sampled_from(["input", "title", "typ"]))] = draw(JUNK)
        nodes[node_id] = entry
    document: dict[str, Any] = {"version": 1, "params": params, "nodes": nodes}
    outputs = [(node_id, output) for node_id in node_ids for output in REGISTRY.nodes[types[node_id]].outputs]
    if outputs and draw(st.booleans()):
        source, output = draw(st.sampled_from(outputs))
        document["outputs"] = {"out": f"{source}.{output}"}
    if junk():
        document[draw(st.sampled_from(["version", "name", "outputs", "nodez"]))] = draw(JUNK)
    return document


def check_graph(document: Any, sets: dict[str, str] | None = None) -> None:
    """Load, validate and plan: a valid plan or a SfumatoError, nothing else."""
    try:
        graph = Graph.from_dict(document)
        if validate_graph(graph, REGISTRY) == []:
            plan_run(graph, REGISTRY, sets or {}, params_from_text=True)
    except SfumatoError:
        pass


@fuzz(200)
@given(graph_documents())
def test_structured_graph_documents_are_valid_or_a_sfumato_error(document):
    check_graph(document)


@fuzz(100)
@given(graph_documents(), st.dictionaries(st.sampled_from(["prompt", "seed", "size", "p", "q"]),
                                          st.one_of(st.text(max_size=12), st.sampled_from(
                                              ["9" * 5000, "[" * 2000, "1e999", "NaN", "\ud800", "1,2,", ","])),
                                          max_size=3))
def test_set_values_are_valid_or_a_sfumato_error(document, sets):
    check_graph(document, sets)


@fuzz(60)
@given(graph_documents(), st.dictionaries(st.sampled_from(["prompt", "seed", "size", "p", "q"]),
                                          st.one_of(JUNK, DEEP), max_size=3), st.one_of(st.none(), st.integers()))
def test_json_values_and_run_seeds_are_valid_or_a_sfumato_error(document, values, seed):
    """As the server and the Python API pass them: typed JSON values, not command-line text."""
    try:
        graph = Graph.from_dict(document)
        if validate_graph(graph, REGISTRY) == []:
            plan_run(graph, REGISTRY, values, seed=seed)
    except SfumatoError:
        pass


@fuzz(60)
@given(graph_documents())
def test_graph_documents_as_text_are_valid_or_a_sfumato_error(document):
    try:
        text = json.dumps(document)
    except (ValueError, TypeError, RecursionError):
        return  # not JSON-serializable: the structured test takes it as a dict
    try:
        graph = parse_graph_text(text)
        validate_graph(graph, REGISTRY)
    except SfumatoError:
        pass


@fuzz(60)
@given(st.one_of(JUNK, DEEP, st.dictionaries(st.sampled_from(["version", "nodes", "params", "outputs", "name"]),
                                             JUNK, max_size=5)))
def test_any_json_value_as_a_graph_is_valid_or_a_sfumato_error(value):
    check_graph(value)


@fuzz(80)
@given(st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", " \n", "{", "[" * 5000, '{"version": 1, "nodes": {},}', '{"nodes": [1,]}',
                     '{"version": 1, "nodes": {"a": {"type": "text.value", "inputs": {"text": 1' + "0" * 5000 + "}}}}",
                     '{"version": 1, "nodes": {"a": {"type": "text.value", "inputs": {"text": "\\ud800"}}}}',
                     '{"version": NaN, "nodes": {}}', '{"version": 1e999, "nodes": {}}']),
))
def test_raw_text_is_valid_or_a_sfumato_error(text):
    try:
        validate_graph(parse_graph_text(text), REGISTRY)
    except SfumatoError:
        pass


@fuzz(40)
@given(graph_documents())
def test_any_parsed_graph_draws_or_is_a_sfumato_error(document):
    from sfumato.graph.drawing import to_dot, to_mermaid, to_svg

    try:
        graph = Graph.from_dict(document)
        for draw in (to_mermaid, to_dot, to_svg):
            assert isinstance(draw(graph), str)
    except SfumatoError:
        pass


@fuzz(80)
@given(st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(lambda name, a, b, c: f"{name}={a}..{b}" + (f"..{c}" if c is not None else ""),
              st.sampled_from(["seed", "p", "", " "]), st.integers(-10**25, 10**25), st.integers(-10**25, 10**25),
              st.one_of(st.none(), st.integers(-10**6, 10**6))),
    st.sampled_from(["seed=0..20000000", "seed=0..3..0", "p=a,,b", "p=" + "," * 200000, "=1", "p=@"]),
), max_size=3), st.booleans())
def test_sweep_specs_make_parameter_sets_or_a_parameter_error(specs, zip_axes):
    from sfumato import ParameterError
    from sfumato.run.sweeps import combine, parse_axis

    try:
        runs = combine([parse_axis(spec) for spec in specs if not spec.partition("=")[2].strip().startswith("@")],
                       zip_axes=zip_axes)
    except ParameterError:
        return
    assert len(runs) <= 100_000


# -- running what validates ------------------------------------------------------------

#: Node types cheap enough to run in a fuzz test (no models, no reading folders).
RUNNABLE = [t for t in NODE_TYPES if (t.startswith("text.") and REGISTRY.nodes[t].context_param is None) or t in (
    "image.text_card", "image.resize", "image.upscale", "image.crop", "image.pad", "image.grid", "image.concat",
    "image.relabel", "image.sharpen", "image.adjust", "image.autocontrast", "image.quantize", "image.save")]
#: Small limits keep the examples fast; a node over them must refuse, not allocate.
RUN_LIMITS = Limits(max_image_pixels=512 * 512, max_batch_pixels=4 * 512 * 512, max_text_length=10_000,
                    max_sweep_runs=10)


@fuzz(40)
@given(graph_documents(RUNNABLE, tame=True))
def test_a_graph_that_validates_runs_or_fails_with_a_sfumato_error(tmp_path_factory, document):
    """"Valid" means the run does not crash: it finishes, or a node fails with a SfumatoError."""
    previous = set_limits(RUN_LIMITS)
    try:
        try:
            graph = Graph.from_dict(document)
            plan = Engine(REGISTRY, device="cpu", cache=False,
                          output_dir=tmp_path_factory.mktemp("run")).plan(graph)
        except SfumatoError:
            return
        Engine(REGISTRY, device="cpu", cache=False, output_dir=tmp_path_factory.mktemp("run")).execute(plan)
    except SfumatoError:
        pass
    finally:
        set_limits(previous)


@fuzz(40)
@given(st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe{}", b"{\"version\": 1,\x00"])))
def test_raw_bytes_in_a_graph_file_load_or_are_a_sfumato_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "graph.json"
    path.write_bytes(data)
    try:
        Graph.load(path)
    except SfumatoError:
        pass


# -- PNG metadata -----------------------------------------------------------------------


def png_with_text(value: str | bytes, *, compressed: bool = True) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if isinstance(value, bytes):
        info.add_text("sfumato", value.decode("latin-1"), zip=compressed)
    else:
        info.add_itxt("sfumato", value, zip=compressed)
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


METADATA = st.fixed_dictionaries(
    {"graph": st.one_of(graph_documents(), JUNK)},
    optional={key: st.one_of(JUNK, DEEP) for key in ("format", "params", "seed", "node", "index", "versions",
                                                     "plugins")},
)


@fuzz(60)
@given(st.one_of(
    METADATA.map(lambda data: json.dumps(data, default=str, ensure_ascii=True)),
    JUNK.map(lambda value: json.dumps(value, default=str)),
    st.text(max_size=100).filter(lambda text: "\x00" not in text),
))
def test_png_metadata_reads_as_checked_data_or_a_metadata_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("png") / "image.png"
    try:
        path.write_bytes(png_with_text(text))
    except (ValueError, UnicodeEncodeError):
        return  # Pillow itself cannot write this text
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["inspect", str(path)]) in (0, 2)  # printed, or refused with a reason
    try:
        data = read_png_metadata(path)
    except MetadataError:
        return
    assert isinstance(data["graph"], dict)
    assert isinstance(data.get("params", {}), dict)
    assert data.get("seed") is None or isinstance(data["seed"], int)
    check_graph(data["graph"], {})


@pytest.mark.parametrize("payload", [
    b"\xff\xfe not utf-8", b"x" * (2 * 2**20),
    ('{"graph": ' + "[" * 5000 + "]" * 5000 + "}").encode(),
    b'{"graph": {"version": 1, "nodes": {}}, "seed": 1' + b"0" * 5000 + b"}",
    b'{"graph": {"version": 1, "nodes": {"a": {"type": "text.value", "inputs": {"text": "\\ud800"}}}}}',
])
def test_crafted_png_metadata_is_a_metadata_error(tmp_path, payload):
    path = tmp_path / "crafted.png"
    path.write_bytes(png_with_text(payload))
    with pytest.raises(MetadataError):
        read_png_metadata(path)
