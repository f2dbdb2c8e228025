"""ControlNets as data: ``diffusion.controlnet`` builds a :class:`ControlStack`, ``diffusion.generate`` applies it.

Each entry is a ControlNet (a diffusers ``ControlNetModel`` folder, or a
library name for one) with its control image, conditioning scale and the part
of the schedule it acts on (``start``..``end`` as fractions of the steps, as
diffusers' ``control_guidance_start``/``end``). Several ControlNets add their
residuals, as diffusers' ``MultiControlNetModel`` does. A step where every
scale is 0 (or outside its window) calls no ControlNet, so a scale of 0 gives
exactly the images made without one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from sfumato import Field, ImageBatch, ModelNotFoundError, RunContext, ValidationContext, node

from .loading import DiffusionModel
from .lora import family_of_width


@dataclass(frozen=True, eq=False)
class ControlEntry:
    """One ControlNet with its control image(s) (one for every output, or one per output)."""

    model: str
    images: ImageBatch
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True, eq=False)
class ControlStack:
    """ControlNets applied together while generating (their residuals add up)."""

    entries: tuple[ControlEntry, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class PreparedControl:
    """A loaded ControlNet and its control image as a tensor, ready for the denoising loop."""

    net: Any
    image: Any  # (N, 3, H, W) in [0, 1]
    scale: float
    start: float
    end: float

    def scale_at(self, index: int, total: int) -> float:
        """The scale at step ``index`` of ``total`` (0 outside the start..end window, as diffusers)."""
        outside = index / total < self.start or (index + 1) / total > self.end
        return 0.0 if outside else self.scale


def read_controlnet_config(folder: Path) -> dict[str, Any]:
    """A ControlNet folder's ``config.json``; ``ValueError`` saying why the folder is not a ControlNet."""
    if (folder / "model_index.json").exists() or (folder / "unet").is_dir():
        raise ValueError(f"{folder} is a diffusion model folder, not a ControlNet")
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(f"{folder} is not a ControlNet folder (no config.json, as ControlNetModel.save_pretrained "
                         "writes)")
    config = json.loads(config_file.read_text())
    kind = str(config.get("_class_name", ""))
    if "ControlNet" not in kind:
        raise ValueError(f"{folder} holds a {kind or 'model without a class name'}, not a ControlNet")
    return config


def _controlnet_folder(model: str, context: ValidationContext) -> Path | None:
    folder = context.model_folder(model)
    if folder is None:
        path = Path(model).expanduser()
        if path.suffix == ".safetensors" or path.is_file():
            raise ValueError(f"{model} is a file: a ControlNet loads from a diffusers folder "
                             "(config.json and diffusion_pytorch_model.safetensors)")
        if "/" in model or path.is_absolute():
            raise ValueError(f"ControlNet {model!r} not found")
    return folder


def _describe_control(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    """Check the ControlNet folder before anything loads; tell consumers which family it is for."""
    if not inputs.get("model"):
        return {}
    try:
        folder = _controlnet_folder(str(inputs["model"]), context)
        if folder is None:
            return {}  # a hub id: loading says whether it is there
        config = read_controlnet_config(folder)
    except ValueError as error:
        context.problem(str(error), "model")
        return {}
    start, end = inputs.get("start", 0.0), inputs.get("end", 1.0)
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start >= end:
        context.problem(f"start ({start}) must be before end ({end})", "end")
    width = config.get("cross_attention_dim")
    return {"control": {"family": family_of_width(int(width))}} if width else {}


def _expect_same_family(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    described = _describe_control(inputs, ValidationContext(context.registry, context.node_id, context.given))
    return {"stack": described["control"]} if described else {}


@node("diffusion.controlnet", category="generate", output="control", describe_outputs=_describe_control,
      expect_inputs=_expect_same_family)
def controlnet(
    images: ImageBatch,
    model: str,
    stack: ControlStack | None = None,
    scale: Annotated[float, Field(ge=0, le=5)] = 1.0,
    start: Annotated[float, Field(ge=0, le=1)] = 0.0,
    end: Annotated[float, Field(ge=0, le=1)] = 1.0,
) -> ControlStack:
    """Add a ControlNet and its control image to the ControlNets ``diffusion.generate`` applies.

    The control image is what the ControlNet was trained on: an edge map
    (``control.edges``), or any image you bring (a depth map, a pose). Chain
    nodes to apply several ControlNets at once.

    Args:
        images: the control image (one for all outputs, or one per output).
        model: a ControlNet folder (diffusers layout) or its library name.
        stack: ControlNets applied with this one (from another ``diffusion.controlnet``).
        scale: conditioning scale (0: no effect).
        start: the fraction of the steps where it starts acting.
        end: the fraction of the steps where it stops acting.
    """
    if start >= end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    if len(images) == 0:
        raise ValueError("no control image")
    entry = ControlEntry(model, images, float(scale), float(start), float(end))
    return ControlStack((stack.entries if stack is not None else ()) + (entry,))


def load_controlnet(context: RunContext, name: str) -> Any:
    """Load (once per process, through the model manager) the ControlNet called ``name``."""
    from sfumato import torch_dtype

    path = context.models.resolve(name)
    if isinstance(path, Path):
        try:
            read_controlnet_config(path)
        except ValueError as error:
            raise ModelNotFoundError(str(error)) from None
    dtype = torch_dtype(context.dtype)

    def load() -> Any:
        from diffusers import ControlNetModel

        return ControlNetModel.from_pretrained(str(path), torch_dtype=dtype).eval().to(context.device)

    return context.models.get(f"controlnet:{path}", context.device, context.dtype, load)


def _image_tensor(images: list[Any], width: int, height: int, device: str, dtype: Any) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
              for im in images]
    return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0).to(device, dtype)


def prepare_controls(context: RunContext, diffusion: DiffusionModel, control: ControlStack | None, count: int,
                     width: int, height: int) -> list[PreparedControl]:
    """Load each ControlNet and turn its control images into a batch of ``count`` for the loop."""
    if control is None:
        return []
    width_wanted = diffusion.unet.config.cross_attention_dim
    prepared = []
    for entry in control.entries:
        net = load_controlnet(context, entry.model)
        if net.config.cross_attention_dim != width_wanted:
            raise ValueError(f"ControlNet {entry.model!r} is for {family_of_width(net.config.cross_attention_dim)} "
                             f"models, but {diffusion.name!r} is {family_of_width(width_wanted)}")
        images = list(entry.images.images)
        if len(images) not in (1, count):
            raise ValueError(f"ControlNet {entry.model!r} has {len(images)} control images for {count} outputs; "
                             f"give 1 or {count}")
        batch = images * count if len(images) == 1 else images
        prepared.append(PreparedControl(net, _image_tensor(batch, width, height, diffusion.device, diffusion.dtype),
                                        entry.scale, entry.start, entry.end))
    return prepared


def control_residuals(controls: list[PreparedControl], index: int, total: int, model_input: Any, t: Any,
                      states: Any, unet_inputs: dict[str, Any], guided: bool) -> dict[str, Any]:
    """The UNet's extra inputs at one step: every acting ControlNet's residuals, summed."""
    import torch

    down, mid = None, None
    for control in controls:
        scale = control.scale_at(index, total)
        if scale == 0.0:
            continue  # exactly the uncontrolled step, and no ControlNet call
        image = torch.cat([control.image] * 2) if guided else control.image
        out_down, out_mid = control.net(model_input, t, encoder_hidden_states=states, controlnet_cond=image,
                                        conditioning_scale=scale, return_dict=False, **unet_inputs)
        if down is None:
            down, mid = list(out_down), out_mid
        else:
            down = [a + b for a, b in zip(down, out_down)]
            mid = mid + out_mid
    if down is None:
        return {}
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
