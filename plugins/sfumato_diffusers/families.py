"""Model families (SD 1.x/2.x, SDXL, SD3, Flux) read from config files and file headers, without torch.

A family decides what conditioning a model takes: SD 1.x/2.x take one CLIP
encoder's states; SDXL takes two encoders' penultimate states side by side,
the second encoder's pooled projection and six time ids (its refiner: CLIP-G
alone and five, with an aesthetic score); SD3 and Flux transformers take
their own (``flow``). Encoders record the family in the ``Conditioning`` they
make, and the generator checks it, at validation (from config files) and
again when it runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sfumato import ModelNotFoundError

SD = "sd"
SDXL = "sdxl"
SD3 = "sd3"
FLUX = "flux"
#: The node that generates with a transformer family's folder (SD and SDXL UNets: diffusion.generate).
TRANSFORMER_GENERATORS = {SD3: "sd3.generate", FLUX: "flux.generate"}

#: What a family's conditioning is made of, for error messages.
FAMILY_ENCODERS = {
    SD: "one CLIP text encoder (encode.text, or the folder's own with 'prompt')",
    SDXL: "CLIP-L + CLIP-G side by side with a pooled projection (encode.sdxl)",
}


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def unet_family(unet_config: dict[str, Any]) -> str:
    """``sdxl`` for a UNet with added text/time embeddings, else ``sd``."""
    return SDXL if unet_config.get("addition_embed_type") == "text_time" else SD


def folder_family(folder: Path) -> str:
    """The family of a diffusers folder, from ``model_index.json`` or ``unet/config.json``; ``""`` if neither."""
    index = _json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    if "XL" in class_name:
        return SDXL
    transformer = str(_json(folder / "transformer" / "config.json").get("_class_name", ""))
    if "Flux" in class_name or transformer.startswith("Flux"):
        return FLUX
    if "StableDiffusion3" in class_name or transformer.startswith("SD3"):
        return SD3
    unet = _json(folder / "unet" / "config.json")
    return unet_family(unet) if unet else ""


def is_sdxl_refiner(folder: Path) -> bool:
    """An SDXL refiner folder: its model index says it takes an aesthetic score, or it has CLIP-G alone."""
    if _json(folder / "model_index.json").get("requires_aesthetics_score") is True:
        return True
    return (folder / "text_encoder_2").is_dir() and not (folder / "text_encoder").is_dir()


def expected_conditioning(folder: Path) -> dict[str, Any]:
    """What a folder's UNet needs from its conditioning: width, and the family when it is not SD 1.x/2.x."""
    unet = _json(folder / "unet" / "config.json")
    expected: dict[str, Any] = {}
    if unet.get("cross_attention_dim"):
        expected["width"] = unet["cross_attention_dim"]
    if unet and unet_family(unet) == SDXL:
        expected["family"] = SDXL
    return expected


def local_hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot folder of a hub id, never reaching the network.

    Raises :class:`ModelNotFoundError` ("not found locally") when the hub cache
    has no copy: a run must not spend half a minute trying a hub it may not reach.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as error:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise ModelNotFoundError(
            f"model {repo_id!r} not found locally: it is not a folder and not in the Hugging Face cache "
            f"({cache}); sfumato never downloads while running: fetch it first (`hf download {repo_id}`) "
            f"or give the path of a model folder or file ({type(error).__name__})"
        ) from None


def single_file_of(name: str, sources: Any) -> Path | None:
    """The ``.safetensors`` file a model name (a library name or a path) names, or ``None``."""
    source = sources.get(name)
    try:
        path = source.path() if source is not None else Path(name).expanduser()
        return path if path.suffix == ".safetensors" and path.is_file() else None
    except (OSError, ValueError, RuntimeError):
        return None


def single_file_family(name: str, sources: Any) -> str:
    """The family of the single-file checkpoint ``name`` names (from its keys), or ``""``."""
    from sfumato import SfumatoError

    from .singlefile import detect_file

    file = single_file_of(name, sources)
    if file is None:
        return ""
    try:
        found = detect_file(file)
    except SfumatoError:
        return ""  # validation of the generator's model input says what the file is not
    return found.family if found.kind in ("checkpoint", "transformer") else ""


def expected_of_single_file(path: Path) -> dict[str, Any]:
    """What a single-file checkpoint's UNet needs from its conditioning (family, width), from its header."""
    from .singlefile import CONDITIONING_FAMILY, checkpoint_family, conditioning_width, read_header

    family = CONDITIONING_FAMILY[checkpoint_family(path)]  # SfumatoError for a file that is no checkpoint
    width = conditioning_width(read_header(path))
    return {**({"family": SDXL} if family == SDXL else {}), **({"width": width} if width else {})}
