"""Loading diffusion models laid out as diffusers folders (``unet/``, ``vae/``, ``scheduler/``...).

The same code loads the project's tiny zoo model and Stable Diffusion 1.x/2.x
checkpoints from a local folder or a hub id. ``sfumato.json`` beside the
components (zoo models) names the text encoder the UNet was trained with.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfumato import ModelNotFoundError, RunContext

from .families import SD, SDXL, local_hub_snapshot, unet_family


@dataclass
class DiffusionModel:
    """The components of one latent diffusion model."""

    name: str
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    text_encoder: Any = None
    tokenizer: Any = None
    device: str = "cpu"
    dtype: Any = None
    family: str = SD

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def uses_pooled_class_embedding(self) -> bool:
        return self.unet.config.class_embed_type == "projection"

    def time_id_count(self, pooled_width: int) -> int:
        """How many time ids an SDXL UNet takes: 6 (base), or 5 (refiner: an aesthetic score instead of a size)."""
        config = self.unet.config
        return (int(config.projection_class_embeddings_input_dim) - pooled_width) // int(config.addition_time_embed_dim)

    def unet_inputs(self, pooled: Any, height: int, width: int,
                    aesthetic_scores: list[float] | None = None) -> dict[str, Any]:
        """The UNet's inputs besides latents, timestep and states, for a batch with this ``pooled``.

        Zoo models take the pooled embedding as a class embedding; SDXL UNets
        take it with time ids as added conditioning: six for the base model
        (original size, crop corner, target size: no crop, the requested size),
        five for the refiner (original size, crop corner, and an aesthetic
        score: ``aesthetic_scores`` gives one per row, default 6.0 as diffusers').
        """
        if self.family == SDXL:
            import torch

            if self.time_id_count(int(pooled.shape[-1])) == 5:
                scores = aesthetic_scores or [6.0] * len(pooled)
                rows = [[height, width, 0, 0, score] for score in scores]
            else:
                rows = [[height, width, 0, 0, height, width]] * len(pooled)
            time_ids = torch.tensor(rows, device=pooled.device, dtype=pooled.dtype)
            return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
        return {"class_labels": pooled if self.uses_pooled_class_embedding else None}


def read_model_info(path: Path | str) -> dict[str, Any]:
    """``sfumato.json`` of a local model folder, or an empty dict."""
    if isinstance(path, Path) and (path / "sfumato.json").exists():
        return json.loads((path / "sfumato.json").read_text())
    return {}


def _check_layout(name: str, path: Path | str) -> None:
    if isinstance(path, Path):
        missing = [part for part in ("unet", "vae", "scheduler") if not (path / part).is_dir()]
        if missing:
            raise ModelNotFoundError(
                f"model {name!r} at {path} is not a diffusers model folder: missing {', '.join(missing)}/ "
                "(expected unet/, vae/ and scheduler/ as written by save_pretrained)"
            )


def load_diffusion_model(context: RunContext, name: str, *, attention_slicing: bool = False,
                         vae_tiling: bool = False, compile_unet: bool = False) -> DiffusionModel:
    """Load (once per process, through the model manager) the model called ``name``."""
    from sfumato import torch_dtype

    preparing = time.perf_counter()  # finding the model and the device (torch's import) is part of a load
    path = context.models.resolve(name)
    if isinstance(path, str):  # a hub id: only a copy already in the hub cache, never a download
        path = local_hub_snapshot(path)
    single_file = path.is_file()
    config = single_file_config(name, path) if single_file else None  # before any weight loads
    if not single_file:
        _check_layout(name, path)
    dtype = torch_dtype(context.dtype)
    key = f"diffusion:{name}" + ("+sliced" if attention_slicing else "") + ("+tiled" if vae_tiling else "") \
        + ("+compiled" if compile_unet else "")

    def load() -> DiffusionModel:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if config is not None:
            model = _single_file_model(context, name, path, config, dtype)
            return _with_options(model, attention_slicing, vae_tiling, compile_unet)
        source = str(path)
        # With accelerate (a dependency) weights load without a second copy in memory. Saying so
        # explicitly keeps diffusers from warning, twice per model, in an environment without it.
        low_memory = importlib.util.find_spec("accelerate") is not None
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype,
                                                    low_cpu_mem_usage=low_memory)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, low_cpu_mem_usage=low_memory)
        scheduler_config = _scheduler_config(path)
        family = unet_family(dict(unet.config))
        model = DiffusionModel(name, unet.eval().to(context.device), vae.eval().to(context.device),
                               scheduler_config, read_model_info(path), device=context.device, dtype=dtype,
                               family=family)
        # SDXL's two encoders are encode.sdxl's to load: they are a conditioning of their own.
        has_text_encoder = (path / "text_encoder").is_dir() and family == SD
        if has_text_encoder and not model.info:
            from transformers import AutoTokenizer, CLIPTextModel

            model.tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
            model.text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype)
            model.text_encoder.eval().to(context.device)
        return _with_options(model, attention_slicing, vae_tiling, compile_unet)

    return context.models.get(key, context.device, context.dtype, load, preparing_since=preparing)


def _with_options(model: DiffusionModel, attention_slicing: bool, vae_tiling: bool, compile_unet: bool) -> DiffusionModel:
    import torch

    if attention_slicing:
        model.unet.set_attention_slice("auto")
    if vae_tiling:
        model.vae.enable_tiling()
    if compile_unet:
        model.unet = torch.compile(model.unet)
    return model


def _scheduler_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "scheduler" / "scheduler_config.json").read_text())


def single_file_config(name: str, path: Path) -> Path:
    """The config folder of a single-file checkpoint; :class:`ModelNotFoundError` when it has none."""
    from .library import ENV_FOLDERS, config_folder_for
    from .singlefile import checkpoint_kind, require_safetensors

    require_safetensors(name, path)
    found = checkpoint_kind(path)
    config = config_folder_for(found.family, "refiner" if found.kind == "refiner" else "pipeline")
    if config is None:
        what = f"{found.family} refiner" if found.kind == "refiner" else found.family
        raise ModelNotFoundError(
            f"model {name!r} is a single-file {what} checkpoint; its configs (and tokenizer) come from a diffusers "
            f"{what} folder in the model library, and there is none: add one (its weights are not read) to a "
            f"folder in {ENV_FOLDERS}")
    return config


def _single_file_model(context: RunContext, name: str, path: Path, config: Path, dtype: Any) -> DiffusionModel:
    """A single-file checkpoint's UNet, VAE and (SD 1.x/2.x) text encoder, configured from ``config``."""
    from .checkpoints import load_checkpoint

    parts = load_checkpoint(path, config, dtype)
    model = DiffusionModel(name, parts["unet"].eval().to(context.device), parts["vae"].eval().to(context.device),
                           _scheduler_config(config), {}, device=context.device, dtype=dtype,
                           family=unet_family(dict(parts["unet"].config)))
    if "text_encoder" in parts and model.family == SD:
        model.text_encoder = parts["text_encoder"].eval().to(context.device)
        model.tokenizer = parts["tokenizer"]
    return model
