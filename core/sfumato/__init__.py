"""sfumato: a plugin-based engine for text-to-image workflows.

This module is the public API; plugins and scripts import from here only.
Importing it never imports torch.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Annotated

from pydantic import Field

from .errors import (
    GraphIssue,
    GraphValidationError,
    ModelNotFoundError,
    NodeDefinitionError,
    NodeExecutionError,
    ParameterError,
    PluginError,
    RunCancelledError,
    RunFailedError,
    SfumatoError,
)
from .graph.builder import GraphBuilder
from .graph.document import Graph, graph_json_schema
from .graph.drawing import to_svg as graph_to_svg
from .graph.migrations import Migration, upgrade_graph
from .graph.shipped import resolve_graph_path, shipped_graphs
from .graph.subgraph import GraphType
from .plugin.catalog import node_as_dict, node_input_schema
from .plugin.context import RunContext, UndeclaredContextReadError
from .plugin.devices import torch_dtype
from .plugin.events import (
    ModelEvicted,
    ModelLoaded,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    RunEvent,
    RunFinished,
    RunStarted,
)
from .plugin.files import UnsafePathError, claim_new_file, path_inside, write_atomically
from .plugin.hookspecs import Executor, hookimpl
from .plugin.lazy import lazy_inputs
from .plugin.limits import LimitExceededError, Limits, current_limits, limits_scope, set_limits
from .plugin.nodes import CachePolicy, NodeSpec, Port, ValidationContext, node, spec_of
from .plugin.paths import PathNotAllowedError, PathPolicy, ReadablePath, WritablePath
from .plugin.ports import PortType
from .plugin.requirements import MissingExtraError, Requirement
from .plugin.seeds import image_seed, image_seeds
from .plugin.values import (
    Conditioning,
    Embedding,
    ImageBatch,
    Latent,
    PromptWeights,
    Regions,
    RegionWindow,
    Retrieved,
    RetrievedItem,
)
from .registry import Registry, default_registry
from .run.engine import Engine
from .run.function import GraphFunction, load_function
from .run.metadata import MetadataError, image_metadata, png_info, read_png_metadata
from .run.nested import find_graph, graph_fingerprint, run_nested
from .run.planning import Plan, plan_run, validate_graph
from .run.report import NodeStatus, RunOutcome, RunReport, RunResult, RunStatus
from .store.codecs import ValueCodec
from .store.hashes import ModelHash, model_hash, remembered_model_hash
from .store.models import ModelManager, ModelSource

try:
    __version__ = _metadata.version("sfumato")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "Annotated", "CachePolicy", "claim_new_file", "Conditioning", "current_limits", "default_registry",
    "Embedding", "Engine", "Executor", "Field", "find_graph", "Graph", "graph_fingerprint",
    "graph_json_schema", "graph_to_svg", "GraphBuilder", "GraphFunction", "GraphIssue", "GraphType",
    "GraphValidationError", "hookimpl", "image_metadata", "image_seed", "image_seeds", "ImageBatch",
    "Latent", "lazy_inputs", "LimitExceededError", "Limits", "limits_scope", "load_function",
    "MetadataError", "Migration", "MissingExtraError", "model_hash", "ModelEvicted", "ModelHash",
    "ModelLoaded", "ModelManager",
    "ModelNotFoundError", "ModelSource", "node", "node_as_dict", "node_input_schema", "NodeCached",
    "NodeDefinitionError", "NodeExecutionError", "NodeFailed", "NodeFinished", "NodeProgress", "NodeSkipped",
    "NodeSpec", "NodeStarted", "NodeStatus", "ParameterError", "path_inside", "PathNotAllowedError",
    "PathPolicy", "Plan", "plan_run", "PluginError", "png_info", "Port", "PortType", "PromptWeights",
    "read_png_metadata", "ReadablePath", "Regions", "RegionWindow", "Registry", "remembered_model_hash", "Requirement", "resolve_graph_path", "Retrieved",
    "RetrievedItem", "run_nested", "RunCancelledError", "RunContext", "RunEvent", "RunFailedError",
    "RunFinished", "RunOutcome", "RunReport", "RunResult", "RunStarted", "RunStatus", "set_limits",
    "SfumatoError", "shipped_graphs", "spec_of", "torch_dtype", "UndeclaredContextReadError",
    "UnsafePathError", "upgrade_graph", "validate_graph", "ValidationContext", "ValueCodec", "WritablePath",
    "write_atomically", "__version__",
]
