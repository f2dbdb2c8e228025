"""A server's provenance and safety policy: ``sfumato serve --policy FILE``.

The policy applies to every job; a job cannot turn it off, because the server
applies it to the job's graph itself, not through anything the job sends:

- ``screen_prompts``: before a job runs, every text it carries (parameter
  values, sweep values, parameter defaults and text literals of its graph) is
  screened by ``safety.screen_prompt``; a refused text fails the job before
  any of its nodes runs.
- ``screen_images``: every ``image.save`` of the job's graph is fed through
  ``safety.screen_images`` (flag, blur or block).
- ``watermark``: every ``image.save`` is fed through ``provenance.watermark``
  (after image screening).

  With either of these two, the policy must reach every image a job writes:
  a job whose graph saves images inside a subgraph is refused before it runs,
  and after a run every image file in the job's folder that the job's own
  run did not record (one written by a graph run inside a node, such as
  ``flow.map``) is deleted and the job fails.
- ``sign``: every PNG a job wrote is signed with C2PA content credentials
  (``provenance.sign``) after the run, by a separate engine that may read the
  key: jobs themselves can never read the signing key.
- ``strip_prompts``: images are saved without reproducibility metadata (the
  IPTC digital source type stays), and when the job ends its stored
  parameters, sweep, graph texts and report texts are replaced by
  ``"<stripped>"``.
- ``keep_days``: finished jobs older than this, and their outputs, are deleted.

The policy file is JSON, for example::

    {"screen_prompts": {"terms": ["gore"], "threshold": 0.55},
     "screen_images": {"model": "/models/sd/safety_checker", "action": "blur"},
     "watermark": true,
     "sign": {"certificate": "/etc/sfumato/chain.pem", "key": "/etc/sfumato/key.pem"},
     "strip_prompts": false, "keep_days": 30}
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sfumato import Engine, GraphBuilder, PathPolicy, SfumatoError

STRIPPED = "<stripped>"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: The most distinct texts of one job that are screened (a job with more is refused).
MAX_SCREENED_TEXTS = 2000
#: Literal inputs that hold no prompt: names of files, models and choices are not screened.
_NOT_PROMPTS = {"path", "model", "template", "index", "folder", "scheduler", "method", "mode", "encoder",
                "if_exists", "action", "separator", "language", "dtype", "device"}


class PolicyError(SfumatoError):
    """A policy file is missing, not JSON, or describes something impossible."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptScreening(_Strict):
    action: Literal["refuse", "flag"] = "refuse"
    terms: list[str] = []
    #: Concept name -> example phrases; None keeps safety.screen_prompt's default list.
    concepts: dict[str, list[str]] | None = None
    threshold: float = Field(0.55, ge=0.0, le=1.0)


class ImageScreening(_Strict):
    model: str
    action: Literal["flag", "blur", "block"] = "blur"
    labels: list[str] = ["nsfw"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)


class Signing(_Strict):
    certificate: Path
    key: Path
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"


class ServerPolicy(_Strict):
    """What ``--policy FILE`` (and ``--strip-prompts``, ``--keep-days``) ask of every job."""

    screen_prompts: PromptScreening | None = None
    screen_images: ImageScreening | None = None
    watermark: bool = False
    sign: Signing | None = None
    strip_prompts: bool = False
    keep_days: float | None = Field(None, gt=0)

    @property
    def active(self) -> bool:
        return any((self.screen_prompts, self.screen_images, self.watermark, self.sign, self.strip_prompts,
                    self.keep_days))

    def readable_folders(self) -> list[Path]:
        """Folders the job engine must read for the policy's own nodes (the image classifier)."""
        if self.screen_images is not None and Path(self.screen_images.model).expanduser().exists():
            return [Path(self.screen_images.model).expanduser().resolve()]
        return []

    # -- the job's graph --------------------------------------------------------------

    def apply_to_graph(self, document: dict[str, Any]) -> dict[str, Any]:
        """The job's graph with image screening and the watermark before every ``image.save``."""
        if not (self.screen_images or self.watermark or self.strip_prompts):
            return document
        graph = copy.deepcopy(document)
        nodes: dict[str, Any] = graph.get("nodes", {})
        for node_id, entry in list(nodes.items()):
            if not isinstance(entry, dict) or entry.get("type") != "image.save":
                continue
            inputs = entry.setdefault("inputs", {})
            if self.strip_prompts:
                inputs["metadata"] = False
            source = inputs.get("images")
            if not (isinstance(source, dict) and "from" in source):
                continue  # not linked: validation reports it
            if self.screen_images is not None:
                screen = _free_id(nodes, f"_policy_screen_{node_id}")
                nodes[screen] = {"type": "safety.screen_images", "inputs": {
                    "images": source, **self.screen_images.model_dump()}}
                source = {"from": f"{screen}.images"}
            if self.watermark:
                mark = _free_id(nodes, f"_policy_watermark_{node_id}")
                nodes[mark] = {"type": "provenance.watermark", "inputs": {"images": source}}
                source = {"from": f"{mark}.images"}
            inputs["images"] = source
        return graph

    @property
    def guards_images(self) -> bool:
        """Whether every image a job writes must pass the policy's nodes (screening or watermark)."""
        return self.screen_images is not None or self.watermark

    def check_reach(self, planned: dict[str, Any], document: dict[str, Any]) -> None:
        """Refuse a job whose plan saves images where the policy's nodes are not (inside a subgraph)."""
        if not self.guards_images:
            return
        top_level = {node_id for node_id, entry in (document.get("nodes") or {}).items()
                     if isinstance(entry, dict) and entry.get("type") == "image.save"}
        hidden = sorted(node_id for node_id, node in planned.items()
                        if node.spec.id == "image.save" and node_id not in top_level)
        if hidden:
            raise PolicyError(f"this server screens and watermarks images at each image.save of a job's graph; "
                              f"{', '.join(hidden)} saves inside a subgraph, where it cannot: save the images at "
                              f"the top level of the graph")

    def remove_unreached(self, folder: Path, recorded: list[str]) -> list[Path]:
        """Delete image files in ``folder`` that the run did not record; the deleted files.

        A graph run inside a node (``flow.map``) saves into the job's folder
        without the policy's nodes and without appearing in the run's files.
        """
        if not self.guards_images:
            return []
        known = {Path(path).resolve() for path in recorded}
        unreached = [path for path in sorted(folder.rglob("*"))
                     if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.resolve() not in known]
        for path in unreached:
            path.unlink(missing_ok=True)
        return unreached

    # -- before and after a job ---------------------------------------------------------

    def screen_texts(self, engine: Engine, texts: list[str]) -> dict[str, Any]:
        """Screen ``texts``; raises (a ``SfumatoError``) when one is refused, else the flagged ones' reasons."""
        if self.screen_prompts is None or not texts:
            return {}
        if len(texts) > MAX_SCREENED_TEXTS:
            raise PolicyError(f"the job carries {len(texts)} texts; at most {MAX_SCREENED_TEXTS} are screened")
        settings = self.screen_prompts.model_dump(exclude_none=True)
        builder = GraphBuilder("policy-screening")
        for index, text in enumerate(texts):
            node = builder.add("safety.screen_prompt", f"text{index}", text=text, **settings)
            builder.output(f"text{index}", node["screening"])
        result = engine.run(builder.build())
        return {name: value["reason"] for name, value in result.outputs.items() if value["verdict"] == "flagged"}

    def sign_files(self, engine: Engine, files: list[str]) -> None:
        """Sign the PNG ``files`` a job wrote with the policy's certificate and key."""
        pngs = [f for f in files if f.lower().endswith(".png")]
        if self.sign is None or not pngs:
            return
        builder = GraphBuilder("policy-signing")
        builder.add("provenance.sign", "sign", paths=pngs, certificate=str(self.sign.certificate),
                    key=str(self.sign.key), algorithm=self.sign.algorithm)
        engine.run(builder.build())

    def signing_engine(self, outputs: Path, device: str = "cpu") -> Engine:
        """An engine for the policy's own steps: it may read the key and the job outputs, write the outputs."""
        reads = [outputs]
        if self.sign is not None:
            reads += [self.sign.certificate.parent, self.sign.key.parent]
        return Engine(device=device, cache=False, output_dir=outputs,
                      path_policy=PathPolicy.confined(read=reads, write=[outputs]))

    def cleanup(self, store: Any, outputs: Path, now: float | None = None) -> list[int]:
        """Delete finished jobs older than ``keep_days`` and their output folders; their ids."""
        if self.keep_days is None:
            return []
        cutoff = (time.time() if now is None else now) - self.keep_days * 86400
        removed = store.delete_finished_before(cutoff)
        for job_id in removed:
            shutil.rmtree(outputs / str(job_id), ignore_errors=True)
        return removed


def _free_id(nodes: dict[str, Any], wanted: str) -> str:
    candidate, number = wanted, 1
    while candidate in nodes:
        number += 1
        candidate = f"{wanted}_{number}"
    return candidate


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict) and not ({"from", "param"} & value.keys()):
        return [text for item in value.values() for text in _strings(item)]
    return []


def job_texts(graph: dict[str, Any], params: dict[str, Any], sweep: dict[str, Any] | None) -> list[str]:
    """Every text a job could turn into a prompt: parameter and sweep values, defaults, text literals."""
    texts = _strings(params) + _strings(sweep or {})
    for spec in (graph.get("params") or {}).values():
        if isinstance(spec, dict):
            texts += _strings(spec.get("default"))
    for entry in (graph.get("nodes") or {}).values():
        if isinstance(entry, dict):
            for name, value in (entry.get("inputs") or {}).items():
                if name not in _NOT_PROMPTS:
                    texts += _strings(value)
    return list(dict.fromkeys(text.strip() for text in texts if text.strip()))


def strip_texts(value: Any) -> Any:
    """``value`` with every string replaced by ``"<stripped>"`` (keys and structure kept)."""
    if isinstance(value, str):
        return STRIPPED
    if isinstance(value, list):
        return [strip_texts(item) for item in value]
    if isinstance(value, dict):
        return {key: strip_texts(item) for key, item in value.items()}
    return value


def strip_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """A graph with its parameter defaults and text literals stripped (node types and links kept)."""
    stripped = copy.deepcopy(graph)
    for spec in (stripped.get("params") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("default"), str):
            spec["default"] = STRIPPED
    for entry in (stripped.get("nodes") or {}).values():
        if isinstance(entry, dict):
            inputs = entry.get("inputs") or {}
            for name, value in inputs.items():
                if name not in _NOT_PROMPTS and not (isinstance(value, dict) and {"from", "param"} & value.keys()):
                    inputs[name] = strip_texts(value)
    return stripped


def load_policy(path: str | Path | None, *, strip_prompts: bool = False, keep_days: float | None = None) -> ServerPolicy:
    """The policy in ``path`` (or an empty one), with the command line's ``--strip-prompts``/``--keep-days``.

    Raises :class:`PolicyError` naming the file and field when it is missing,
    not JSON, has unknown or wrong fields, or names a key or certificate that
    does not exist.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise PolicyError(f"--policy {path}: {error.strerror or error}") from None
        except ValueError as error:
            raise PolicyError(f"--policy {path}: not JSON: {error}") from None
        if not isinstance(data, dict):
            raise PolicyError(f"--policy {path}: expected a JSON object")
    if strip_prompts:
        data["strip_prompts"] = True
    if keep_days is not None:
        data["keep_days"] = keep_days
    try:
        policy = ServerPolicy.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise PolicyError(f"--policy {path}: {problems}") from None
    if policy.sign is not None:
        for name in ("certificate", "key"):
            file = getattr(policy.sign, name).expanduser()
            if not file.is_file():
                raise PolicyError(f"--policy {path}: sign.{name}: no file at {file}")
            setattr(policy.sign, name, file.resolve())
    return policy
