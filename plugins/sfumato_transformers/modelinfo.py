"""Reading model configs without loading models (for validation-time checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sfumato


def local_model_path(name: str, manager: sfumato.ModelManager | None = None) -> Path | None:
    """The local folder a model name or path points to, or ``None`` (e.g. a hub id)."""
    sources = manager.sources if manager is not None else sfumato.default_registry().models
    source = sources.get(name)
    if source is not None:
        return source.path()
    path = Path(name).expanduser()
    return path if path.exists() else None


def read_config(name: str, filename: str = "config.json") -> dict[str, Any] | None:
    """A JSON config of a local model, or ``None`` when it cannot be read cheaply."""
    path = local_model_path(name)
    if path is None or not (path / filename).exists():
        return None
    try:
        return json.loads((path / filename).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def encoder_family(config: dict[str, Any] | None) -> str:
    """``clip``, ``t5`` or ``sentence`` from a transformers config."""
    model_type = (config or {}).get("model_type", "")
    if model_type.startswith("clip"):
        return "clip"
    if model_type in ("t5", "umt5", "mt5"):
        return "t5"
    return "sentence"


def hidden_width(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    if "text_config" in config:
        config = config["text_config"]
    for key in ("hidden_size", "d_model", "dim"):
        if key in config:
            return int(config[key])
    return None
