"""Speed levers as data: one typed ``speed`` recipe on the generation nodes.

A recipe names the levers that make a diffusion run faster — precision,
memory layout, attention backend, ``torch.compile`` of the repeated blocks,
int8 quantization (torchao), DeepCache-style step caching, token merging
(tomesd), few-step sampling (with an LCM-LoRA for Stable Diffusion models) and
a CPU backend (OpenVINO, :mod:`.cpu_backend`) — as one JSON object::

    {"dtype": "bfloat16", "channels_last": true, "step_cache": 2}
    {"lcm_lora": "lcm-lora-sdv1-5.safetensors", "backend": "openvino"}

It is a literal input, so it is part of the node's cache signature and of the
graph (and parameters) stored in a PNG's metadata. Combinations known not to
work, or not to help on the run's device, are refused with a message naming
both levers (:func:`recipe_conflicts`) before any weights move.

The levers that change the UNet's modules (dtype, layout, attention, fusion,
quantization, compile, token merging, a merged LCM-LoRA, the backend) are
applied once to a copy of the loaded model, kept by the model manager under a
key that includes the recipe; step caching and few-step sampling act per
denoising loop.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .loading import DiffusionModel

#: Refused on these devices: the dtype is emulated there, slower than float32.
_SLOW_DTYPES = {"cpu": ("float16",)}


class SpeedRecipe(BaseModel):
    """The acceleration levers of one generation; every field off by default.

    Attributes:
        dtype: weights and activations of the UNet and VAE; ``None`` keeps the run's ``--dtype``.
        channels_last: NHWC memory layout for the convolutions.
        attention: ``"sdpa"`` sets PyTorch's scaled-dot-product attention processor explicitly.
        fuse_qkv: fuse each attention's query, key and value projections into one matmul.
        compile: ``torch.compile`` each repeated block (transformer and ResNet blocks).
        quantize: torchao quantization of the UNet's linear layers (int8; float8 on GPUs that have it).
        step_cache: run the whole UNet every N-th step and only its outer blocks in between,
            reusing the deep features (DeepCache); 1 is off.
        token_merging: fraction of tokens tomesd merges in the attention blocks; 0 is off.
        sampler: a few-step scheduler (``lcm`` needs an LCM-distilled model or ``lcm_lora``).
        steps: denoising steps, overriding the node's ``steps`` (with ``sampler``, typically 2-8).
        lcm_lora: an LCM-LoRA file (``.safetensors``, e.g. ``lcm-lora-sdv1-5``) merged into a copy of the
            UNet; it switches to the ``lcm`` sampler with 4 steps and guidance 1 unless ``sampler``,
            ``steps`` or ``guidance`` say otherwise.
        guidance: classifier-free guidance scale, overriding the node's ``guidance`` (1 turns it off,
            halving each step's work).
        backend: ``"openvino"`` runs the UNet and the VAE decoder converted to OpenVINO (CPU only;
            ``dtype`` is its inference precision); ``"torch"`` is PyTorch itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    channels_last: bool = False
    attention: Literal["default", "sdpa"] = "default"
    fuse_qkv: bool = False
    compile: bool = False
    quantize: Literal["none", "int8_dynamic", "int8_weight_only", "float8_dynamic"] = "none"
    step_cache: int = Field(1, ge=1, le=10)
    token_merging: float = Field(0.0, ge=0.0, le=0.75)
    sampler: Literal["lcm", "tcd"] | None = None
    steps: int | None = Field(None, ge=1, le=1000)
    lcm_lora: str | None = Field(None, min_length=1)
    guidance: float | None = Field(None, ge=0, le=50)
    backend: Literal["torch", "openvino"] = "torch"

    def __repr__(self) -> str:
        # The cache signature falls back to repr for non-JSON literals: make it the
        # canonical JSON of the levers that are set, so equal recipes sign alike.
        return f"SpeedRecipe({self.key()})"

    def key(self) -> str:
        """A short canonical text of the levers that differ from the defaults (``""`` for none)."""
        import json

        return json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True, separators=(",", ":"))

    @property
    def changes_modules(self) -> bool:
        """Whether the recipe needs its own copy of the UNet (levers applied to its modules)."""
        return bool(self.dtype or self.channels_last or self.attention != "default" or self.fuse_qkv
                    or self.compile or self.quantize != "none" or self.token_merging or self.lcm_lora
                    or self.backend != "torch")


def as_recipe(value: Any) -> SpeedRecipe | None:
    """A recipe from ``None``, a dict (JSON) or a recipe; ``None`` when no lever is set."""
    if value is None:
        return None
    recipe = value if isinstance(value, SpeedRecipe) else SpeedRecipe.model_validate(value)
    return recipe if recipe.key() != "{}" else None


def recipe_conflicts(recipe: SpeedRecipe, device: str | None = None) -> list[str]:
    """Why this recipe is refused (each message names the two levers); empty when it is fine.

    ``device`` (``"cpu"``, ``"cuda:0"``...) adds the device-dependent checks; without it,
    only the combinations that never work are checked (graph validation, before a device).
    """
    problems: list[str] = []
    if recipe.compile and recipe.token_merging:
        problems.append("speed.compile with speed.token_merging: tomesd changes the number of tokens "
                        "between blocks, so compiled blocks re-trace; use one of the two")
    if recipe.step_cache > 1 and recipe.sampler:
        problems.append(f"speed.step_cache={recipe.step_cache} with speed.sampler={recipe.sampler!r}: a few-step "
                        "sampler leaves too few steps to reuse features between (each reused step is a large "
                        "jump); use one of the two")
    if recipe.quantize != "none" and recipe.dtype == "float16" and (device or "").startswith("cpu"):
        problems.append("speed.quantize with speed.dtype='float16' on cpu: torchao's int8 kernels take "
                        "float32 or bfloat16 activations on cpu")
    kind = (device or "").split(":")[0]
    if recipe.quantize == "float8_dynamic" and kind == "cpu":
        problems.append("speed.quantize='float8_dynamic' with device 'cpu': float8 matmuls need a GPU with "
                        "float8 tensor cores (compute capability 8.9+); use 'int8_dynamic'")
    if recipe.quantize == "float8_dynamic" and recipe.dtype in (None, "float32"):
        problems.append("speed.quantize='float8_dynamic' with speed.dtype float32: float8 scales bfloat16 "
                        "activations; set speed.dtype='bfloat16'")
    if recipe.dtype in _SLOW_DTYPES.get(kind, ()):
        problems.append(f"speed.dtype={recipe.dtype!r} with device {kind!r}: float16 is emulated on cpu "
                        "(slower than float32, and some kernels are missing); use 'bfloat16'")
    if recipe.lcm_lora and recipe.step_cache > 1:
        problems.append(f"speed.step_cache={recipe.step_cache} with speed.lcm_lora: an LCM-LoRA samples in a few "
                        "steps, too few to reuse features between; use one of the two")
    problems += _backend_conflicts(recipe, kind)
    return problems


#: Levers the OpenVINO backend cannot honour: they change PyTorch modules or calls that it replaces.
_NOT_ON_BACKEND = {
    "compile": "it compiles the model itself",
    "quantize": "torchao's quantized weights do not convert",
    "token_merging": "tomesd patches PyTorch's attention blocks at run time",
    "step_cache": "step caching skips the UNet's deep blocks, and the exported UNet runs as one piece",
    "channels_last": "it chooses its own memory layout",
    "attention": "it chooses its own attention kernels",
    "fuse_qkv": "it fuses projections itself",
}


def _backend_conflicts(recipe: SpeedRecipe, kind: str) -> list[str]:
    if recipe.backend == "torch":
        return []
    defaults = SpeedRecipe()
    problems = [f"speed.backend={recipe.backend!r} with speed.{lever}: {why}; use one of the two"
                for lever, why in _NOT_ON_BACKEND.items() if getattr(recipe, lever) != getattr(defaults, lever)]
    if kind and kind != "cpu":
        problems.append(f"speed.backend={recipe.backend!r} with device {kind!r}: it is a CPU backend; "
                        "run on cpu or drop speed.backend")
    return problems


def recipe_problems(recipe: SpeedRecipe) -> list[str]:
    """What a recipe needs and this machine lacks: a backend's package, a readable LCM-LoRA file."""
    problems: list[str] = []
    if recipe.backend == "openvino":
        from .cpu_backend import OPENVINO

        if not OPENVINO.is_installed():
            problems.append(f"speed.backend='openvino': {OPENVINO.message()}")
    if recipe.lcm_lora:
        from .lora import inspect_lora_file

        path = Path(recipe.lcm_lora).expanduser()
        if not path.is_file():
            problems.append(f"speed.lcm_lora: no file {recipe.lcm_lora!r}")
        else:
            try:
                info = inspect_lora_file(path)
            except ValueError as error:
                problems.append(f"speed.lcm_lora: {error}")
            else:
                if not info.has_unet:
                    problems.append(f"speed.lcm_lora: {recipe.lcm_lora} has no UNet weights (an LCM-LoRA "
                                    "adapts the UNet)")
    return problems


# --- applying the levers to a model --------------------------------------------------------------


@dataclasses.dataclass
class AcceleratedModel(DiffusionModel):
    """A diffusion model with a recipe's module levers applied; carries the recipe for the loop levers."""

    recipe: SpeedRecipe | None = None


def accelerate(context: Any, diffusion: DiffusionModel, recipe: SpeedRecipe | None) -> DiffusionModel:
    """``diffusion`` with the recipe's levers applied (a copy, loaded once per recipe), or itself.

    Device-dependent conflicts are checked here, where the run's device is known.
    """
    if recipe is None:
        return diffusion
    problems = recipe_conflicts(recipe, str(context.device)) + recipe_problems(recipe)
    if problems:
        raise ValueError("; ".join(problems))
    if not recipe.changes_modules:
        return apply_levers(diffusion, recipe)  # no copy: only the loop levers
    key = f"diffusion:{diffusion.name}+speed:{recipe.key()}"
    if recipe.lcm_lora:  # the file's content, not its path, is what the copy carries
        key += f"+lcm:{lcm_stack(recipe.lcm_lora).entries[0].sha256}"
    return context.models.get(key, context.device, context.dtype, lambda: apply_levers(diffusion, recipe))


def _fields(diffusion: DiffusionModel) -> dict[str, Any]:
    return {f.name: getattr(diffusion, f.name) for f in dataclasses.fields(DiffusionModel)}


def apply_levers(diffusion: DiffusionModel, recipe: SpeedRecipe) -> AcceleratedModel:
    """Copy the UNet (and the VAE when the dtype changes) and apply the recipe's module levers.

    A recipe with loop levers only shares the model's modules. The order matters: fusing QKV concatenates float weights, so it comes before
    quantization; compile comes last, over the final modules.
    """
    import torch

    if not recipe.changes_modules:
        return AcceleratedModel(**_fields(diffusion), recipe=recipe)
    unet = copy.deepcopy(diffusion.unet)
    vae = diffusion.vae
    dtype = diffusion.dtype
    info = diffusion.info
    if recipe.lcm_lora:
        # First, on the float weights the LoRA was trained against; the other levers act on the result.
        from .lora import merge_lora

        merge_lora(dataclasses.replace(diffusion, unet=unet), lcm_stack(recipe.lcm_lora))
        info = {**info, "lcm": True}  # the lcm scheduler now fits this copy
    if recipe.dtype and recipe.backend == "torch":  # a backend's dtype is its inference precision
        from diffusers.utils import logging as diffusers_logging

        dtype = getattr(torch, recipe.dtype)
        # diffusers warns about casting loaded models with .to(dtype) in case some modules must stay
        # float32; it lists none for these UNets and VAEs, so the warning says nothing here.
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            unet = unet.to(dtype)
            vae = copy.deepcopy(vae).to(dtype)
        finally:
            diffusers_logging.set_verbosity(verbosity)
    if recipe.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if recipe.attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    if recipe.fuse_qkv:
        unet.fuse_qkv_projections()
    if recipe.token_merging:
        tomesd = _optional("tomesd", "token_merging")

        # use_rand=False: the merge pattern must not depend on the global random state,
        # or the same seed would draw different images.
        tomesd.apply_patch(unet, ratio=recipe.token_merging, use_rand=False)
    if recipe.quantize != "none":
        quantize_linear_layers(unet, recipe.quantize)
    if recipe.compile:
        compile_repeated_blocks(unet)
    if recipe.backend == "openvino":
        from .cpu_backend import on_openvino

        unet, vae = on_openvino(unet, vae, recipe.dtype)
    fields = {**_fields(diffusion), "unet": unet, "vae": vae, "dtype": dtype, "info": info}
    return AcceleratedModel(**fields, recipe=recipe)


def lcm_stack(path: str) -> Any:
    """A one-entry LoRA stack of an LCM-LoRA file (read and hashed by the LoRA node's own code)."""
    from .lora import lora

    return lora(path)


def _optional(package: str, lever: str) -> Any:
    """Import a lever's optional package, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ValueError(f"speed.{lever} needs the {package} package: pip install 'sfumato[speed]'") from None


def quantize_linear_layers(module: Any, kind: str) -> None:
    """torchao int8 quantization of ``module``'s linear layers, in place."""
    _optional("torchao", "quantize")
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    configs = {"int8_dynamic": Int8DynamicActivationInt8WeightConfig, "int8_weight_only": Int8WeightOnlyConfig,
               "float8_dynamic": Float8DynamicActivationFloat8WeightConfig}
    quantize_(module, configs[kind]())


#: Blocks repeated through a UNet: compiling each (regional compilation) compiles one graph per
#: distinct shape instead of the whole UNet, so the first call is much shorter.
_REPEATED_BLOCKS = ("BasicTransformerBlock", "ResnetBlock2D")


def compile_repeated_blocks(unet: Any) -> int:
    """``torch.compile`` every repeated block of ``unet`` in place; returns how many."""
    count = 0
    for module in unet.modules():
        if type(module).__name__ in _REPEATED_BLOCKS:
            module.compile()
            count += 1
    return count


def tensor_bytes(tensor: Any) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses (torchao's quantized weights)."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor).__name__ not in ("Tensor", "Parameter"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized weights count as int8 + scales)."""
    return sum(tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))


# --- per-loop levers: few-step sampling and step caching ------------------------------------------


#: An LCM-LoRA's sampling unless the recipe says otherwise (the LCM-LoRA paper's 4 steps, no guidance).
LCM_LORA_STEPS = 4
LCM_LORA_GUIDANCE = 1.0


def sampling_choice(recipe: SpeedRecipe | None, scheduler: str, steps: int) -> tuple[str, int]:
    """The scheduler name and step count a loop uses under the recipe."""
    if recipe is None:
        return scheduler, steps
    if recipe.lcm_lora:
        return recipe.sampler or "lcm", recipe.steps or LCM_LORA_STEPS
    return recipe.sampler or scheduler, recipe.steps or steps


def guidance_choice(speed: Any, guidance: float) -> float:
    """The guidance scale a loop uses under the recipe (``speed``: a recipe, its JSON, or ``None``)."""
    recipe = as_recipe(speed)
    if recipe is None:
        return guidance
    if recipe.guidance is not None:
        return recipe.guidance
    return LCM_LORA_GUIDANCE if recipe.lcm_lora else guidance


def make_sampler(name: str, scheduler_config: dict[str, Any], supports_lcm: bool) -> Any:
    """A scheduler by name, including the few-step ``tcd`` that the base list does not offer."""
    if name == "tcd":
        import inspect

        from diffusers import TCDScheduler

        # Only the settings TCD takes: the training schedule, not another sampler's options.
        accepted = inspect.signature(TCDScheduler.__init__).parameters
        return TCDScheduler.from_config({k: v for k, v in scheduler_config.items() if k in accepted})
    from .schedulers import make_scheduler

    return make_scheduler(name, scheduler_config, supports_lcm)


def for_one_loop(diffusion: DiffusionModel) -> DiffusionModel:
    """The model one denoising loop uses: with step caching, a fresh cache around the UNet."""
    recipe = getattr(diffusion, "recipe", None)
    if recipe is None or recipe.step_cache <= 1:
        return diffusion
    return dataclasses.replace(diffusion, unet=StepCachedUNet(diffusion.unet, recipe.step_cache))


class StepCachedUNet:
    """DeepCache around a ``UNet2DConditionModel``: deep features computed every ``interval`` calls.

    On a full call the whole UNet runs and the outputs of its deep part (every
    down block but the first, the middle block, every up block but the last)
    are kept. On the calls in between those blocks return what they returned
    last time, so only ``conv_in``, the first down block, the last up block and
    ``conv_out`` run — the high-resolution skip path, which changes most from
    step to step. Adjacent denoising steps have very similar deep features
    (Ma et al., DeepCache, CVPR 2024), so images stay close at a fraction of the cost.

    Attributes:
        full_calls: how many calls ran the whole UNet.
        shallow_calls: how many reused the deep features.
    """

    def __init__(self, unet: Any, interval: int) -> None:
        self.unet = unet
        self.interval = interval
        self.config = unet.config
        self.full_calls = 0
        self.shallow_calls = 0
        self._calls = 0
        self._kept: dict[int, Any] = {}

    def _deep_blocks(self) -> list[Any]:
        unet = self.unet
        blocks = list(unet.down_blocks[1:]) + list(unet.up_blocks[:-1])
        if unet.mid_block is not None:
            blocks.append(unet.mid_block)
        return blocks

    def __getattr__(self, name: str) -> Any:
        # Anything else (dtype, device, ...) is the UNet's.
        return getattr(self.__dict__["unet"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        full = self._calls % self.interval == 0 or not self._kept
        self._calls += 1
        blocks = self._deep_blocks()
        if full:
            self.full_calls += 1
            handles = [block.register_forward_hook(self._keeper(index)) for index, block in enumerate(blocks)]
            try:
                return self.unet(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
        self.shallow_calls += 1
        for index, block in enumerate(blocks):
            block.forward = self._replayer(index)  # an instance attribute shadows the class's forward
        try:
            return self.unet(*args, **kwargs)
        finally:
            for block in blocks:
                del block.forward

    def _keeper(self, index: int) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            self._kept[index] = output
        return keep

    def _replayer(self, index: int) -> Any:
        def replay(*_args: Any, **_kwargs: Any) -> Any:
            return self._kept[index]
        return replay


# --- what the generation nodes call ---------------------------------------------------------------


def validation_problems(value: Any) -> list[str]:
    """Device-independent conflicts of a ``speed`` input and what it lacks (graph validation); [] for none."""
    try:
        recipe = as_recipe(value)
    except ValueError:
        return []  # an invalid recipe is reported by the input's own type check
    return recipe_conflicts(recipe) + recipe_problems(recipe) if recipe is not None else []


def prepare(context: Any, diffusion: DiffusionModel, speed: Any, scheduler: str, steps: int,
            loras: Any = None) -> tuple[DiffusionModel, str, int]:
    """The model, scheduler and steps one generation uses under its ``speed`` recipe.

    Raises:
        ValueError: a conflict on the run's device, or module levers with LoRAs (the
            accelerated copy is keyed by the recipe alone, so it must not carry a LoRA; a
            merged LCM-LoRA leaves plain weights, which take a LoRA stack as any model does).
    """
    recipe = as_recipe(speed)
    if recipe is None:
        return diffusion, scheduler, steps
    if loras and recipe.backend != "torch":
        raise ValueError(f"speed.backend={recipe.backend!r} with loras: the exported UNet has fixed weights; "
                         "merge the LoRA into the model, or drop one of the two")
    if loras and recipe.model_copy(update={"lcm_lora": None}).changes_modules:
        raise ValueError("speed levers that change the UNet (dtype, channels_last, attention, fuse_qkv, compile, "
                         "quantize, token_merging) with loras: not supported together yet; keep only "
                         "step_cache/sampler/steps in the recipe, or drop the LoRAs")
    scheduler, steps = sampling_choice(recipe, scheduler, steps)
    return accelerate(context, diffusion, recipe), scheduler, steps
