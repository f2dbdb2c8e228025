"""LoRA stacks as data: ``diffusion.lora`` builds a :class:`LoraStack`, ``diffusion.generate`` applies it.

A stack is a plain value (file identities and strengths), so it is part of the
cache signature of every node it reaches. Applying it goes through diffusers'
adapter API on the shared, cached model's denoiser (a UNet, or the SD3/Flux
transformer of ``sd3.generate``/``flux.generate``): each file is loaded once per model
(its adapter is named by the file's SHA-256), and a run sets the adapters'
strengths (``set_adapters``) for its duration. So changing only a strength
loads nothing, and a run without LoRAs disables every adapter the model carries
(the model manager shares one model between runs). A per-model lock keeps two
runs with different stacks from interleaving on the same weights.

Files: ``.safetensors`` only, in diffusers (``unet.…lora.down``/``lora_A``,
``transformer.…lora_A``), kohya (``lora_unet_…``/``lora_te_…``) or raw peft
(``base_model.model.…``) key formats. Validation reads only the file header (key names and shapes), never
the weights.
"""

from __future__ import annotations

import contextlib
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from sfumato import CachePolicy, Field, ReadablePath, RunContext, ValidationContext, model_hash, node

from .loading import DiffusionModel
from .singlefile import detect, read_header, tensor_shapes

#: Families whose denoiser is a transformer (``FluxModel.pipeline.transformer``), not a UNet.
TRANSFORMER_FAMILIES = ("flux", "sd3")

#: Cross-attention widths of the public families, to name a family in messages.
FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def family_of_width(width: int) -> str:
    """A family name for a UNet cross-attention width (``sd1``, ``sdxl``), or ``cross-attention-<n>``."""
    return FAMILY_BY_WIDTH.get(width, f"cross-attention-{width}")


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA file in a stack.

    Attributes:
        path: the file.
        sha256: its content hash (the adapter's identity: the same file is loaded once).
        key_format: ``diffusers``, ``kohya`` or ``peft``.
        strength: the UNet's (or transformer's) strength.
        text_strength: the text encoder's strength.
    """

    path: str
    sha256: str
    key_format: str
    strength: float = 1.0
    text_strength: float = 1.0

    @property
    def adapter_name(self) -> str:
        return f"lora_{self.sha256[:16]}"


@dataclass(frozen=True)
class LoraStack:
    """LoRAs to apply while generating, in order; ``fuse`` merges them into the weights for the run."""

    entries: tuple[LoraEntry, ...] = ()
    fuse: bool = False

    def __len__(self) -> int:
        return len(self.entries)


# -- reading files (header only) ----------------------------------------------------------------


@dataclass(frozen=True)
class LoraFileInfo:
    """What a LoRA file's header says: key format, parts and the cross-attention width it targets."""

    key_format: str
    has_unet: bool
    has_text_encoder: bool
    cross_attention_dim: int | None
    #: ``flux`` or ``sd3`` for a transformer LoRA whose keys name that architecture's blocks, else ``""``.
    transformer_family: str = ""


def inspect_lora_file(path: Path) -> LoraFileInfo:
    """Read a LoRA file's header (no weights); raise ``ValueError`` saying why it is not a LoRA."""
    shapes = tensor_shapes(path, "LoRAs")
    keys = list(shapes)
    lora_keys = [k for k in keys if "lora" in k.lower()]
    if not lora_keys:
        if any(k.startswith("model.diffusion_model.") for k in keys):
            raise ValueError(f"{path} is a full model checkpoint, not a LoRA")
        if any("controlnet_cond_embedding" in k or k.startswith("control_model.") for k in keys):
            raise ValueError(f"{path} is a ControlNet, not a LoRA")
        if any(k.startswith(("image_proj.", "ip_adapter.")) for k in keys):
            raise ValueError(f"{path} is an IP-Adapter, not a LoRA")
        raise ValueError(f"{path} holds no LoRA weights (no key names a 'lora' layer)")
    if any(k.startswith(("lora_unet_", "lora_te")) for k in lora_keys):
        key_format = "kohya"
        has_unet = any(k.startswith("lora_unet_") for k in lora_keys)
        has_text = any(k.startswith("lora_te") for k in lora_keys)
    elif any(k.startswith("base_model.model.") for k in lora_keys):
        key_format = "peft"
        has_text = any(_is_text_encoder_key(k.removeprefix("base_model.model.")) for k in lora_keys)
        has_unet = any(not _is_text_encoder_key(k.removeprefix("base_model.model.")) for k in lora_keys)
    else:
        key_format = "diffusers"
        has_unet = any(k.startswith(("unet.", "transformer.")) for k in lora_keys)
        has_text = any(k.startswith("text_encoder") for k in lora_keys)
        if not (has_unet or has_text):
            raise ValueError(f"{path}: LoRA keys name neither a UNet, a transformer nor a text encoder "
                             f"(first key {lora_keys[0]!r}); expected diffusers, kohya or peft key names")
    width = None
    for key in lora_keys:
        # The down (A) matrix of a cross-attention key projection is (rank, cross_attention_dim).
        flat = key.replace(".", "_")
        if "attn2" in flat and "to_k" in flat and any(d in key for d in ("lora_A", "lora_down", "lora.down")) \
                and len(shapes[key]) >= 2:
            width = int(shapes[key][1])
            break
    transformer = ""
    if width is None:
        family = detect(read_header(path)).family
        transformer = family if family in TRANSFORMER_FAMILIES else ""
    return LoraFileInfo(key_format, has_unet, has_text, width, transformer)


def _is_text_encoder_key(name: str) -> bool:
    """A raw peft key of a CLIP text encoder (``text_model.…``, or flattened ``encoder.layers.…``)."""
    return name.startswith(("text_model.", "encoder.layers.", "embeddings.")) or ".self_attn." in name \
        or ".mlp.fc" in name


def _sha256(path: Path) -> str:
    return model_hash(path).sha256  # remembered per file version: a stack of large LoRAs is hashed once


def note_lora_files(context: RunContext, stack: LoraStack | None) -> None:
    """Resolve each LoRA file of ``stack`` through the run's model manager, which notes it as a model the
    run used: the PNG metadata of the run's images records it with its hash, next to the base model."""
    for entry in stack.entries if stack is not None else ():
        context.models.resolve(entry.path)


def file_fingerprint(input_name: str) -> Callable[[dict[str, Any]], str]:
    """A cache fingerprint of the file named by input ``input_name``: its path, size and mtime,
    so an edited or replaced file is a new signature (shared by the LoRA and IP-Adapter nodes)."""
    def fingerprint(inputs: dict[str, Any]) -> str:
        path = Path(str(inputs.get(input_name, "")))
        try:
            stat = path.stat()
            return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            return f"{path}:missing"

    return fingerprint


def _describe_lora(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """Check the file before anything loads; tell consumers which family it targets."""
    if not inputs.get("path"):
        return {}  # a link or an unset parameter: checked when the node runs
    try:
        info = inspect_lora_file(Path(str(inputs["path"])).expanduser())
    except ValueError as error:
        context.problem(str(error), "path")
        return {}
    if info.transformer_family:
        return {"loras": {"family": info.transformer_family}}
    return {"loras": {"family": family_of_width(info.cross_attention_dim)}} if info.cross_attention_dim else {}


def _expect_same_family(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """The stack this LoRA joins must target the same family (so a chain is checked link by link)."""
    described = _describe_lora(inputs, ValidationContext(context.registry, context.node_id, context.given))
    return {"stack": described["loras"]} if described else {}


@node("diffusion.lora", category="generate", output="loras", describe_outputs=_describe_lora,
      expect_inputs=_expect_same_family, cache=CachePolicy(fingerprint=file_fingerprint("path"), to_disk=False))
def lora(
    path: ReadablePath,
    stack: LoraStack | None = None,
    strength: Annotated[float, Field(ge=-10, le=10)] = 1.0,
    text_strength: Annotated[float, Field(ge=-10, le=10)] = 1.0,
    fuse: bool = False,
) -> LoraStack:
    """Add a LoRA (a ``.safetensors`` file) to a stack that ``diffusion.generate`` applies.

    Chain nodes to stack several LoRAs. Diffusers, kohya and peft key formats
    are recognised. Strengths change without reloading anything; a strength of
    0 gives the model's own output.

    Args:
        path: the LoRA file (``.safetensors``).
        stack: LoRAs applied before this one (from another ``diffusion.lora``).
        strength: strength on the UNet (or transformer).
        text_strength: strength on the model's own text encoder (prompts given as text).
        fuse: merge the whole stack into the weights for the run (faster steps; set on the last node).
    """
    file = Path(path).expanduser()
    info = inspect_lora_file(file)
    entry = LoraEntry(str(file.resolve()), _sha256(file), info.key_format, float(strength), float(text_strength))
    previous = stack.entries if stack is not None else ()
    if any(e.sha256 == entry.sha256 for e in previous):
        raise ValueError(f"{path} is already in the stack; change its strength instead of adding it twice")
    return LoraStack(previous + (entry,), fuse=bool(fuse) or (stack.fuse if stack is not None else False))


# -- applying stacks to a cached model ------------------------------------------------------------


_locks_guard = threading.Lock()
_states: dict[int, _AdapterState] = {}


@dataclass
class _AdapterState:
    """Which adapters one cached model carries, per component, and the lock runs hold while using it."""

    lock: threading.RLock
    denoiser: set[str]
    text_encoder: set[str]


def denoiser_of(model: Any) -> Any:
    """The module LoRAs act on: a ``DiffusionModel``'s UNet, or a Flux/SD3 pipeline's transformer."""
    return model.unet if hasattr(model, "unet") else model.pipeline.transformer


def _state_of(model: Any) -> _AdapterState:
    with _locks_guard:
        return _states.setdefault(id(denoiser_of(model)), _AdapterState(threading.RLock(), set(), set()))


def model_lock(model: Any) -> threading.RLock:
    """The lock a run holds while it changes or uses ``model``'s adapters (re-entrant)."""
    return _state_of(model).lock


def _peft_state_dict(entry: LoraEntry, denoiser_prefix: str = "unet.") -> dict[str, Any]:
    """A raw peft file in diffusers' naming (``unet.``/``transformer.``/``text_encoder.`` prefixes), alpha applied."""
    from safetensors.torch import load_file

    tensors = load_file(entry.path)
    scale = 1.0
    config = Path(entry.path).with_name("adapter_config.json")
    if config.exists():
        settings = json.loads(config.read_text())
        if settings.get("lora_alpha") and settings.get("r"):
            scale = float(settings["lora_alpha"]) / float(settings["r"])
    converted = {}
    for key, value in tensors.items():
        name = key.removeprefix("base_model.model.")
        prefix = "text_encoder." if _is_text_encoder_key(name) else denoiser_prefix
        if scale != 1.0 and "lora_B" in name:
            value = value * scale  # peft scales B by alpha/r at run time; diffusers reads rank-only configs
        converted[prefix + name] = value
    return converted


def _load_into_text_encoder(text_encoder: Any, state: dict[str, Any], alphas: Any, name: str) -> bool:
    """Inject a LoRA into a CLIP text encoder with peft itself, as diffusers' loader does.

    diffusers goes through transformers' adapter integration, which (transformers 5)
    asks for a newer peft than the registries have; peft's own injection does the same work.
    """
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import _create_lora_config
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    state = {k.removeprefix("text_encoder."): v for k, v in state.items() if k.startswith("text_encoder.")}
    if not state:
        return False
    state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(state))
    if not hasattr(text_encoder, "text_model"):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    rank = {k: v.shape[1] for k, v in state.items() if k.endswith("lora_B.weight")}
    if alphas is not None:
        alphas = {k.removeprefix("text_encoder."): v for k, v in alphas.items() if k.split(".")[0] == "text_encoder"}
    config = _create_lora_config(state, alphas, None, rank, is_unet=False)
    with warnings.catch_warnings():
        # peft warns that a model already carrying adapters gets another one: that is what a stack is.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, text_encoder, adapter_name=name)
    set_peft_model_state_dict(text_encoder, state, adapter_name=name)
    text_encoder.to(device=text_encoder.device, dtype=text_encoder.dtype)
    return True


def _load_into_transformer(model: Any, entry: LoraEntry, adapters: _AdapterState) -> None:
    """Load one file's adapters into a Flux or SD3 transformer, through diffusers' loader of that family."""
    from diffusers.loaders import FluxLoraLoaderMixin, SD3LoraLoaderMixin

    transformer = model.pipeline.transformer
    source: Any = _peft_state_dict(entry, "transformer.") if entry.key_format == "peft" else entry.path
    if model.family == "flux":  # kohya and BFL-named Flux files are converted by the loader
        state, alphas = FluxLoraLoaderMixin.lora_state_dict(source, return_alphas=True)
        if any(k.startswith("transformer.") for k in state):
            FluxLoraLoaderMixin.load_lora_into_transformer(state, alphas, transformer, adapter_name=entry.adapter_name)
            adapters.denoiser.add(entry.adapter_name)
    else:
        state = SD3LoraLoaderMixin.lora_state_dict(source)
        if any(k.startswith("transformer.") for k in state):
            SD3LoraLoaderMixin.load_lora_into_transformer(state, transformer, adapter_name=entry.adapter_name)
            adapters.denoiser.add(entry.adapter_name)
    if entry.adapter_name not in adapters.denoiser:
        raise ValueError(f"it holds no weights for a {model.family} transformer (its text-encoder parts act only "
                         "on a model's own text encoder)")


def _load_entry(model: Any, entry: LoraEntry, adapters: _AdapterState) -> None:
    """Load one file's adapters into the model's UNet or transformer (and text encoder, when it has one)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as host

    if model.family in TRANSFORMER_FAMILIES:
        _load_into_transformer(model, entry, adapters)  # conditioning comes from encode.flux/encode.sd3
        return
    source: Any = _peft_state_dict(entry) if entry.key_format == "peft" else entry.path
    # The UNet's config lets diffusers map kohya files named by SGM blocks (input_blocks_4_...) for SDXL.
    state, alphas = host.lora_state_dict(source, unet_config=model.unet.config)
    if any(k.startswith("unet.") for k in state):
        host.load_lora_into_unet(state, alphas, model.unet, adapter_name=entry.adapter_name)
        adapters.denoiser.add(entry.adapter_name)
    # Zoo models take conditioning from encode.text: only the UNet part applies to them.
    if model.text_encoder is not None and _load_into_text_encoder(model.text_encoder, state, alphas,
                                                                  entry.adapter_name):
        adapters.text_encoder.add(entry.adapter_name)


def _forget(model: Any, entry: LoraEntry, adapters: _AdapterState) -> None:
    """Remove whatever part of ``entry`` was injected before its load failed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for part in (denoiser_of(model), getattr(model, "text_encoder", None)):
        if part is None:
            continue
        for module in part.modules():
            if isinstance(module, BaseTunerLayer) and entry.adapter_name in getattr(module, "lora_A", {}):
                module.delete_adapter(entry.adapter_name)
        config = getattr(part, "peft_config", None)
        if config and entry.adapter_name in config:
            del config[entry.adapter_name]
    adapters.denoiser.discard(entry.adapter_name)
    adapters.text_encoder.discard(entry.adapter_name)


@contextlib.contextmanager
def lora_applied(model: DiffusionModel | Any, stack: LoraStack | None) -> Iterator[None]:
    """Hold ``model`` with exactly ``stack``'s adapters active (none when ``stack`` is empty) for a run.

    ``model`` is a :class:`DiffusionModel` (UNet) or a ``flow.FluxModel`` (Flux or SD3 transformer).
    """
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    entries = stack.entries if stack is not None else ()
    adapters = _state_of(model)
    denoiser = denoiser_of(model)
    with adapters.lock:
        for entry in entries:
            if entry.adapter_name not in adapters.denoiser | adapters.text_encoder:
                with warnings.catch_warnings():
                    # peft warns that a model with adapters gets another (what a stack is), and which
                    # adapter becomes active when a half-loaded one is removed (the run sets them all).
                    warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                    try:
                        _load_entry(model, entry, adapters)
                    except Exception as error:  # noqa: BLE001 - any failure: take out what went in, name the file
                        _forget(model, entry, adapters)
                        raise ValueError(f"LoRA {entry.path} does not fit model {model.name!r}: {error}") from None
        on_denoiser = [e for e in entries if e.adapter_name in adapters.denoiser]
        on_text = [e for e in entries if e.adapter_name in adapters.text_encoder]
        if adapters.denoiser:
            if on_denoiser:
                denoiser.enable_lora()
                denoiser.set_adapters([e.adapter_name for e in on_denoiser], [e.strength for e in on_denoiser])
            else:
                denoiser.disable_lora()
        if adapters.text_encoder:
            set_adapter_layers(model.text_encoder, enabled=bool(on_text))
            if on_text:
                set_weights_and_activate_adapters(model.text_encoder, [e.adapter_name for e in on_text],
                                                  [e.text_strength for e in on_text])
        fused = bool(stack is not None and stack.fuse and on_denoiser)
        if fused:
            denoiser.fuse_lora(adapter_names=[e.adapter_name for e in on_denoiser])
        try:
            yield
        finally:
            if fused:
                denoiser.unfuse_lora()


def merge_lora(model: Any, stack: LoraStack) -> None:
    """Merge ``stack`` into ``model``'s denoiser weights for good, leaving plain layers (no adapters).

    For a private copy of a model that keeps a LoRA always on (a speed recipe's LCM-LoRA):
    afterwards it is an ordinary model again, so a LoRA stack applies to it as to any other,
    and an exported copy carries the merged weights. Only the denoiser is changed.
    """
    import dataclasses

    model = dataclasses.replace(model, text_encoder=None)  # the UNet (or transformer) part only
    denoiser = denoiser_of(model)
    with lora_applied(model, stack):
        names = [e.adapter_name for e in stack.entries if e.adapter_name in _state_of(model).denoiser]
        if not names:
            raise ValueError(f"LoRA {stack.entries[0].path} has no weights for model {model.name!r}'s denoiser")
        denoiser.fuse_lora(adapter_names=names)
    denoiser.unload_lora()  # keeps the fused weights, drops the LoRA layers
    with _locks_guard:
        _states.pop(id(denoiser), None)  # no adapters left to track on it
