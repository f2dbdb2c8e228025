"""Reading model configs without loading models (for validation-time checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_config(folder: Path | None, filename: str = "config.json") -> dict[str, Any] | None:
    """A JSON config in a local model folder, or ``None`` (no folder, e.g. a hub id, or no such file).

    Validation callbacks find the folder with ``ValidationContext.model_folder(name)``;
    running nodes with ``context.models.resolve(name)``.
    """
    if folder is None or not (folder / filename).exists():
        return None
    try:
        return json.loads((folder / filename).read_text())
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


def local_hub_snapshot(repo_id: str) -> Path:
    """The hub cache's copy of ``repo_id``, without any network access.

    Raises ``ModelNotFoundError`` ("not found locally") when there is none, at
    once: a run never waits on a hub it may not reach.
    """
    import os

    from huggingface_hub import snapshot_download

    from sfumato import ModelNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (FileNotFoundError, OSError, ValueError) as error:  # LocalEntryNotFoundError is an OSError
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise ModelNotFoundError(
            f"model {repo_id!r} not found locally: it is not a folder and not in the Hugging Face cache "
            f"({cache}); sfumato never downloads while running: fetch it first (`hf download {repo_id}`) "
            f"or give the path of a model folder ({type(error).__name__})"
        ) from None
