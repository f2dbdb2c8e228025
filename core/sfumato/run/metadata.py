"""Reproducibility metadata stored in the PNG files sfumato writes.

Each PNG carries a ``sfumato`` text chunk with JSON: the graph document, the
resolved parameters, the seed, the image's index in its batch, the versions of
sfumato, its plugins and the main libraries, the version and plugin of each
node type in the graph, the device and dtype, and the models the run used with
the SHA-256 of their files (:func:`run_models`). ``sfumato run IMAGE.png``
runs it again (naming what changed since, :func:`provenance_issues` and
:func:`model_changes`);
``sfumato run IMAGE.png --check`` also compares the pixels
(:func:`compare_pixels`, :func:`metadata_differences`); ``sfumato inspect
IMAGE.png`` prints it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import GraphIssue, GraphValidationError, SfumatoError
from ..graph.jsontext import JSONTextError, describe_problems, json_problems, parse_json
from ..graph.subgraph import GRAPH_PREFIX
from ..plugin.context import RunContext
from ..plugin.events import active_run_id
from ..store.hashes import model_hash

PNG_KEY = "sfumato"
METADATA_FORMAT = 1
#: The longest ``sfumato`` text chunk read (decompressed); a graph with its
#: parameters is a few kilobytes, so a larger chunk is refused, not parsed.
MAX_METADATA_CHARS = 8 * 2**20
_LIBRARIES = ("torch", "diffusers", "transformers", "pillow", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape pixels (without importing them)."""
    versions = {}
    for name in ("sfumato", *_LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def plugin_versions(registry: Any = None) -> dict[str, str]:
    """Versions of the plugins that loaded (``local`` for one not installed as a distribution)."""
    from ..registry import default_registry

    return {
        record.name: record.version or "local"
        for record in (registry or default_registry()).plugins.values() if record.status == "ok"
    }


def node_versions(document: dict[str, Any], registry: Any = None) -> dict[str, dict[str, Any]]:
    """``{node type: {"version": N, "plugin": name}}`` for each node type the graph ``document`` uses."""
    from ..registry import default_registry

    registry = registry or default_registry()
    used = {entry.get("type") for entry in (document.get("nodes") or {}).values() if isinstance(entry, dict)}
    return {node_type: {"version": registry.nodes[node_type].version, "plugin": registry.nodes[node_type].plugin}
            for node_type in sorted(t for t in used if t in registry.nodes)}


def graph_model_names(document: dict[str, Any], params: dict[str, Any], registry: Any) -> list[str]:
    """The models a graph's nodes name: their ``model`` inputs, and the weight files they read.

    A ``model`` input counts by the rule validation checks model names by: a
    node that loads a model takes a run context and names the model in a text
    input called ``model`` (literal, a parameter, or the default). A weight
    file is a ``.safetensors`` file given to an input declared
    :data:`~sfumato.ReadablePath` (a LoRA, a ControlNet, an IP-Adapter).
    """
    declared = document.get("params") or {}

    def value_of(given: Any) -> Any:
        if isinstance(given, dict) and "param" in given:
            default = declared.get(given["param"], {})
            return params.get(given["param"], default.get("default") if isinstance(default, dict) else None)
        return given

    names: list[str] = []
    for entry in (document.get("nodes") or {}).values():
        spec = registry.nodes.get(entry.get("type")) if isinstance(entry, dict) else None
        if spec is None:
            continue
        inputs = entry.get("inputs") or {}
        if spec.context_param is not None and "model" in spec.inputs:
            value = value_of(inputs.get("model", spec.inputs["model"].default))
            if isinstance(value, str) and value:
                names.append(value)
        for name, port in spec.inputs.items():
            value = value_of(inputs.get(name))
            if getattr(port, "path_access", None) == "read" and isinstance(value, str) \
                    and value.lower().endswith(".safetensors"):
                names.append(value)
    return list(dict.fromkeys(names))


def describe_model(name: str, location: Path | str, sources: dict[str, Any]) -> dict[str, Any]:
    """What the metadata records of one model: its path and SHA-256 (and each file's, for a folder).

    A model of the model library whose hash the library already knows is not
    hashed again; a hub id is recorded as such (its files are the hub cache's).
    """
    if isinstance(location, str):
        return {"hub_id": location}
    source = sources.get(name)
    known = getattr(source, "sha256", "") if source is not None else ""
    if known:
        return {"path": str(location), "sha256": known}
    try:
        return {"path": str(location), **model_hash(Path(location)).as_dict()}
    except OSError as error:
        return {"path": str(location), "error": f"cannot hash it: {error}"}


def run_models(context: RunContext) -> dict[str, dict[str, Any]]:
    """The models the saving node's run used, by name, each with its path and SHA-256.

    Those the run's nodes resolved to load them (the model manager notes each
    name a run resolves, :meth:`~sfumato.ModelManager.used_by`), and the
    ``model`` inputs of the graph (:func:`graph_model_names`), which also
    covers nodes whose results came from the cache. File hashes are computed
    once per file and remembered (see :mod:`sfumato.store.hashes`).
    """
    models = getattr(context, "models", None)
    if models is None:
        return {}
    used: dict[str, Path | str] = dict(models.used_by(active_run_id()))
    registry = context.settings.registry
    if registry is not None:
        for name in graph_model_names(context.graph_document, context.params, registry):
            if name not in used:
                try:
                    used[name] = models.resolve(name)
                except Exception:  # noqa: BLE001 - a name that resolves no more is not recorded
                    continue
    return {name: describe_model(name, used[name], models.sources) for name in sorted(used)}


def image_metadata(context: RunContext, index: int = 0) -> dict[str, Any]:
    """The metadata to store with the ``index``-th image a node saves.

    The node's context must declare (``context_keys``) the settings read here:
    graph, params, seed, device and dtype, as output nodes do by default.
    """
    registry = context.settings.registry
    document = context.graph_document
    # Device and dtype shape pixels only through torch: when no node has imported
    # it, none computed on a device, and resolving "auto" would import it for nothing.
    torch_used = "torch" in sys.modules
    return {
        "format": METADATA_FORMAT,
        "graph": document,
        "params": context.params,
        "seed": context.seed,
        "node": context.node_id,
        "index": index,
        "versions": library_versions(),
        "plugins": plugin_versions(registry),
        "nodes": node_versions(document, registry),
        "device": context.device if torch_used else None,
        "dtype": context.dtype if torch_used else None,
        "models": run_models(context),
    }


#: IPTC's digital source type for media made by a trained model ("generative AI").
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: The PNG keyword of an XMP packet (Adobe's XMP specification, part 3).
XMP_KEY = "XML:com.adobe.xmp"
#: The XMP packet every PNG sfumato writes carries: the IPTC digital source type, which marks the
#: image as generated for readers of IPTC metadata (and for the EU AI Act's marking duty).
DIGITAL_SOURCE_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>"
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
)


def png_info(data: dict[str, Any] | None) -> Any:
    """A Pillow ``PngInfo`` with the IPTC digital source type (XMP) and ``data`` as the ``sfumato`` chunk.

    With ``data=None`` only the digital source type is written: every PNG
    sfumato makes says it is generated, also without reproducibility metadata.
    """
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(XMP_KEY, DIGITAL_SOURCE_XMP)
    if data is not None:
        info.add_itxt(PNG_KEY, json.dumps(data, ensure_ascii=False, default=str), zip=True)
    return info


class MetadataError(SfumatoError, ValueError):
    """A PNG holds no sfumato metadata, or metadata that is damaged or crafted.

    Also a ``ValueError`` for callers written against earlier versions.
    """


#: Field -> (accepted types, description) for the optional fields of the metadata.
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((int,), "an integer"),
    "params": ((dict,), "an object"),
    "seed": ((int, type(None)), "an integer"),
    "node": ((str, type(None)), "a string"),
    "index": ((int, type(None)), "an integer"),
    "versions": ((dict,), "an object"),
    "plugins": ((dict,), "an object"),
    "nodes": ((dict,), "an object"),
    "device": ((str, type(None)), "a string"),
    "dtype": ((str, type(None)), "a string"),
    "models": ((dict,), "an object"),
}


def check_metadata(data: Any, where: str = "the metadata") -> dict[str, Any]:
    """Check decoded metadata is what sfumato writes; raise :class:`MetadataError` if not.

    PNG metadata is untrusted: anyone can write a text chunk. The result has a
    ``graph`` object, ``params``/``versions``/``plugins`` objects, an integer
    (or null) ``seed`` and ``index``, and only safe JSON values inside.
    """
    if not isinstance(data, dict):
        raise MetadataError(f"{where} is damaged: expected a JSON object, got {type(data).__name__}")
    unsafe = json_problems(data, limit=3)
    if unsafe:
        raise MetadataError(f"{where} is damaged: {describe_problems(unsafe)}")
    if not isinstance(data.get("graph"), dict):
        raise MetadataError(f"{where} is damaged: 'graph' must be a graph object")
    from ..graph.document import Graph

    try:
        # The stored graph's structure, as a graph file's (its node types are checked when run).
        issues = list(Graph.from_dict(data["graph"], source="the stored graph").input_errors)
    except GraphValidationError as error:
        issues = error.issues
    if issues:
        problems = "; ".join(str(issue) for issue in issues[:3])
        raise MetadataError(f"{where} is damaged: the stored graph is not a valid graph: {problems}")
    for name, (types, text) in _FIELDS.items():
        if name in data and (not isinstance(data[name], types) or isinstance(data[name], bool)):
            raise MetadataError(f"{where} is damaged: {name!r} must be {text}, "
                                f"not {type(data[name]).__name__}")
    for name in ("versions", "plugins"):
        if not all(isinstance(value, str) for value in data.get(name, {}).values()):
            raise MetadataError(f"{where} is damaged: the values of {name!r} must be strings")
    for node_type, made_by in data.get("nodes", {}).items():
        if (not isinstance(made_by, dict) or not isinstance(made_by.get("plugin"), str)
                or not isinstance(made_by.get("version"), int) or isinstance(made_by.get("version"), bool)):
            raise MetadataError(f"{where} is damaged: 'nodes' must map node types to "
                                f'{{"version": integer, "plugin": string}}, not {node_type!r:.60}: {made_by!r:.60}')
    for name, model in data.get("models", {}).items():
        files = model.get("files", {}) if isinstance(model, dict) else None
        if not isinstance(model, dict) or not all(isinstance(model.get(key, ""), str) for key in ("sha256", "path")) \
                or not isinstance(files, dict) or not all(isinstance(sha, str) for sha in files.values()):
            raise MetadataError(f"{where} is damaged: 'models' must map model names to "
                                f'{{"path": string, "sha256": string, "files": {{path: string}}}}, not '
                                f'{name!r:.60}: {model!r:.60}')
    if isinstance(data.get("index"), int) and data["index"] < 0:
        raise MetadataError(f"{where} is damaged: 'index' must not be negative")
    return data


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The sfumato metadata of a PNG, checked by :func:`check_metadata`.

    Raises :class:`MetadataError` (a ``ValueError``) when the file is no
    readable PNG, has no metadata, or has metadata that is damaged or crafted.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # Only the chunks before the pixel data, which is where image.save puts
            # them: reading ``image.text`` would decode every pixel of a crafted
            # 20000x20000 file first. Pillow refuses text chunks over its
            # MAX_TEXT_CHUNK (1 MB, also after decompression) as it reads them.
            raw = image.info.get(PNG_KEY)
    except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, OSError, ValueError) as error:
        raise MetadataError(f"{path}: cannot read it as a PNG: {error}") from None
    if raw is None:
        raise MetadataError(f"{path} holds no sfumato metadata (was it saved by sfumato's image.save?)")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise MetadataError(f"{path}: the sfumato metadata is damaged: not text")
    if len(raw) > MAX_METADATA_CHARS:
        raise MetadataError(f"{path}: the sfumato metadata is {len(raw):,} characters; "
                            f"at most {MAX_METADATA_CHARS:,} are read")
    try:
        data = parse_json(raw)
    except JSONTextError as error:
        raise MetadataError(f"{path}: the sfumato metadata is damaged: {error}") from None
    return check_metadata(data, f"{path}: the sfumato metadata")


# -- comparing with what is installed and with a re-made image ----------------------------------


def _made_with(data: dict[str, Any], node_type: str) -> str:
    """``node image.sharpen v2 from plugin imaging 0.1.0``, as far as the metadata says."""
    made_by = data.get("nodes", {}).get(node_type)
    if made_by is None:  # metadata from before node versions were recorded
        return f"node {node_type} (its version is not recorded)"
    plugin = made_by["plugin"]
    return f"node {node_type} v{made_by['version']} from plugin {plugin} {data.get('plugins', {}).get(plugin, '')}".rstrip()


def provenance_issues(data: dict[str, Any], registry: Any) -> tuple[list[GraphIssue], list[GraphIssue]]:
    """What is missing or different, in ``registry``, from the node types and plugins that made an image.

    ``data`` is checked metadata (:func:`read_png_metadata`). Returns
    ``(missing, changed)``: node types that are not installed (the graph cannot
    run), and node types installed at another version or from another version
    of their plugin (it runs, and its pixels may differ). Each issue names the
    node type, version and plugin that made the image.
    """
    missing: list[GraphIssue] = []
    changed: list[GraphIssue] = []
    types_used: dict[str, str] = {}
    for node_id, entry in data["graph"].get("nodes", {}).items():
        if not entry.get("type", "").startswith(GRAPH_PREFIX):  # a graph file: planning finds it, or says why not
            types_used.setdefault(entry.get("type", ""), node_id)
    for node_type, node_id in sorted(types_used.items()):
        made_with = _made_with(data, node_type)
        made_by = data.get("nodes", {}).get(node_type)
        path = f"nodes.{node_id}.type"
        if node_type not in registry.nodes:
            plugin = registry.plugins.get(made_by["plugin"]) if made_by else None
            if made_by and plugin is None:
                why = f"plugin {made_by['plugin']} is not installed"
            elif made_by and plugin.status != "ok":
                why = f"plugin {made_by['plugin']} is {plugin.status}" + (f": {plugin.error}" if plugin.error else "")
            else:
                why = registry.unknown_node_message(node_type)
            missing.append(GraphIssue(path, f"this image was made with {made_with}; it is not installed ({why})",
                                      node_id))
            continue
        if made_by is None:
            continue
        spec = registry.nodes[node_type]
        record = registry.plugins.get(spec.plugin)
        plugin_now = (record.version or "local") if record else ""
        plugin_then = data.get("plugins", {}).get(made_by["plugin"], "")
        if (spec.version, spec.plugin, plugin_now) != (made_by["version"], made_by["plugin"], plugin_then):
            installed = f"v{spec.version} from plugin {spec.plugin} {plugin_now}".rstrip()
            changed.append(GraphIssue(path, f"made with {made_with}; installed: {installed}", node_id))
    return missing, changed


#: The metadata fields that say what made an image, for :func:`metadata_differences`.
_MADE_WITH = (("versions", "library"), ("plugins", "plugin"), ("nodes", "node"))


def metadata_differences(made: dict[str, Any], remade: dict[str, Any]) -> list[str]:
    """What made two images differently: library, plugin and node versions, device, dtype.

    ``made`` and ``remade`` are checked metadata; fields that ``made`` does not
    record (metadata from an older sfumato) are not compared. Each difference
    reads ``plugin imaging: 0.1.0 then, 0.2.0 now``.
    """
    differences = []
    # Plugins that provide none of the graph's node types cannot have made it differently.
    used = {made_by["plugin"] for data in (made, remade) for made_by in data.get("nodes", {}).values()}
    for field, what in _MADE_WITH:
        if field not in made:
            continue
        before, after = made[field], remade.get(field, {})
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if old == new or (field == "plugins" and "nodes" in made and name not in used):
                continue
            if field == "nodes":
                old = f"v{old['version']} from plugin {old['plugin']}" if old else None
                new = f"v{new['version']} from plugin {new['plugin']}" if new else None
            differences.append(f"{what} {name}: {old or 'absent'} then, {new or 'absent'} now")
    if "models" in made:
        differences += _model_differences(made["models"], remade.get("models", {}))
    for field in ("device", "dtype"):
        # Recorded only where torch computed (see image_metadata): "not recorded" is no difference.
        if made.get(field) and remade.get(field) and made[field] != remade[field]:
            differences.append(f"{field}: {made[field]} then, {remade[field]} now")
    return differences


def _short_hash(model: dict[str, Any] | None) -> str:
    if not model:
        return "not used"
    return f"sha256 {model['sha256'][:12]}" if model.get("sha256") else model.get("hub_id", "not hashed")


def _model_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``model NAME: sha256 1a2b... then, 3c4d... now`` for each model whose weights (or use) differ."""
    differences = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if (old or {}).get("sha256") == (new or {}).get("sha256") and (old is None) == (new is None):
            continue
        line = f"model {name}: {_short_hash(old)} then, {_short_hash(new)} now"
        changed = [path for path, sha in ((old or {}).get("files") or {}).items()
                   if ((new or {}).get("files") or {}).get(path) != sha]
        if old and new and changed:
            line += f" ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} differ)"
        differences.append(line)
    return differences


def model_changes(data: dict[str, Any], sources: dict[str, Any]) -> list[str]:
    """The models recorded in ``data`` whose files differ now, or that are gone: one message each.

    ``sources`` are the registered model sources (the registry's ``models``).
    Models recorded without a hash (hub ids, files that could not be read)
    are not compared.
    """
    from ..store.models import ModelManager

    manager = ModelManager(sources=sources)
    messages = []
    for name, made in sorted(data.get("models", {}).items()):
        if not made.get("sha256"):
            continue
        try:
            now = describe_model(name, manager.resolve(name), sources)
        except SfumatoError as error:
            messages.append(f"model {name!r} that made this image is not available: {str(error).splitlines()[0]}")
            continue
        if now.get("sha256") != made["sha256"]:
            messages.append(f"model {name!r} has other weights now (sha256 {made['sha256'][:12]} then, "
                            f"{str(now.get('sha256', 'unreadable'))[:12]} now): the image may come out differently")
    return messages


@dataclass
class PixelComparison:
    """How two images' pixels compare: :func:`compare_pixels`."""

    equal: bool
    #: Why they cannot be compared pixel by pixel (another size or mode), else "".
    mismatch: str = ""
    #: The largest difference of one channel of one pixel (0 to 255 for 8-bit images).
    max_difference: int = 0
    #: Pixels with any channel different, and all pixels.
    pixels_different: int = 0
    pixels: int = 0


def compare_pixels(made: str | Path, remade: str | Path) -> PixelComparison:
    """Compare two image files pixel by pixel (exactly: the same size, mode and values)."""
    import numpy as np
    from PIL import Image

    with Image.open(made) as first, Image.open(remade) as second:
        if (first.size, first.mode) != (second.size, second.mode):
            return PixelComparison(False, f"{second.width}x{second.height} {second.mode} now, "
                                          f"{first.width}x{first.height} {first.mode} then")
        a, b = np.asarray(first).astype(np.int64), np.asarray(second).astype(np.int64)
    difference = np.abs(a - b)
    per_pixel = difference.reshape(difference.shape[0], difference.shape[1], -1).max(axis=2)
    return PixelComparison(bool(not per_pixel.any()), "", int(difference.max(initial=0)),
                           int(np.count_nonzero(per_pixel)), int(per_pixel.size))
