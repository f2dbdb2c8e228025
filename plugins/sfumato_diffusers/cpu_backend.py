"""A CPU backend for the repeated part of a diffusion run: the UNet and the VAE decoder on OpenVINO.

A ``speed`` recipe selects it with ``{"backend": "openvino"}``. The UNet (the
part a denoising loop calls every step) and the VAE decoder are converted from
PyTorch to OpenVINO once per input shape — static shapes, which OpenVINO
compiles best — and the converted model is kept on disk, so a second run, or a
second process, loads it instead of converting again. The cache key is the
SHA-256 of the module's weights (another copy of the same weights finds the same
file; a merged LCM-LoRA makes other weights, so another file), the input shapes and
the OpenVINO version::

    $SFUMATO_EXPORT_CACHE  or  $XDG_CACHE_HOME/sfumato/exported  (~/.cache/sfumato/exported)
        openvino-2026.4.1/<unet|vae-decoder>-<weights sha256[:24]>-<shapes>/model.xml (+ model.bin)

Each new static shape converts once: another image size or batch, guidance on or off (it
doubles the UNet's batch), or the one-image previews of a run someone watches. The PyTorch
UNet stays loaded beside the converted one for that.

The recipe's ``dtype`` is OpenVINO's inference precision: ``float32`` by
default (the output stays within a small tolerance of PyTorch's), ``bfloat16``
on CPUs with bfloat16 instructions. The exported weights are float32 either way.

OpenVINO was measured against ONNX Runtime on an SD-1.5-shaped UNet on this CPU
(benchmarks/RESULTS.md, "Speed levers") and ran faster; it converts PyTorch
modules without an ONNX step, so it is the one backend. Install it with
``pip install 'sfumato[cpu]'``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sfumato

#: The optional package, named in the message when it is missing.
OPENVINO = sfumato.Requirement("openvino", extra="cpu", feature="speed.backend='openvino'")
ENV_CACHE = "SFUMATO_EXPORT_CACHE"
#: The UNet's optional tensor inputs a loop passes (zoo class embeddings, SDXL's added conditioning).
_OPTIONAL_INPUTS = ("class_labels", "text_embeds", "time_ids")
#: OpenVINO's names for the recipe's dtypes.
_PRECISIONS = {None: "f32", "float32": "f32", "bfloat16": "bf16"}


def export_cache_root() -> Path:
    """Where converted models are kept (``$SFUMATO_EXPORT_CACHE``, else the user's sfumato cache folder)."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "sfumato" / "exported"


def _openvino() -> Any:
    if not OPENVINO.is_installed():
        raise OPENVINO.error()
    import openvino

    return openvino


def weights_sha256(module: Any) -> str:
    """SHA-256 of a module's parameters and buffers: names, dtypes, shapes and bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _shape_key(arrays: list[Any]) -> str:
    return "-".join("x".join(str(d) for d in a.shape) or "s" for a in arrays)


#: How many conversions this process made (tests count them: a cached model is not converted again).
EXPORTS = {"count": 0}


@dataclass
class _Compiled:
    request: Any
    lock: threading.Lock


class ExportedModule:
    """A torch module run by OpenVINO: converted once per input shape, cached on disk, compiled once.

    ``forward`` is the module whose inputs are the flat tensors passed to :meth:`run`
    (a UNet wrapped to take positional tensors, the VAE's decode).
    """

    def __init__(self, forward: Any, kind: str, precision: str) -> None:
        self.forward = forward
        self.kind = kind
        self.precision = precision
        self._sha: str | None = None
        self._compiled: dict[str, _Compiled] = {}
        self._guard = threading.Lock()

    def path_for(self, arrays: list[Any]) -> Path:
        """The converted model's file for inputs shaped like ``arrays``."""
        openvino = _openvino()
        if self._sha is None:
            self._sha = weights_sha256(self.forward)
        version = openvino.get_version().split("-")[0]
        return export_cache_root() / f"openvino-{version}" / f"{self.kind}-{self._sha[:24]}-{_shape_key(arrays)}" \
            / "model.xml"

    def _compile(self, arrays: list[Any]) -> _Compiled:
        openvino = _openvino()
        path = self.path_for(arrays)
        if not path.exists():
            _convert(self.forward, arrays, path)
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"})
        return _Compiled(compiled.create_infer_request(), threading.Lock())

    def run(self, *tensors: Any) -> Any:
        """The module's output for these tensors (float32 numpy in, a float32 torch tensor out)."""
        import torch

        arrays = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in tensors]
        key = _shape_key(arrays)
        with self._guard:  # one conversion per shape even when runs share the model
            if key not in self._compiled:
                self._compiled[key] = self._compile(arrays)
            compiled = self._compiled[key]
        with compiled.lock:  # an infer request runs one inference at a time
            result = compiled.request.infer(arrays)
            output = torch.from_numpy(result[0].copy())
        return output


def _convert(forward: Any, arrays: list[Any], path: Path) -> None:
    """Convert ``forward`` for these example inputs and save it atomically under ``path``'s folder."""
    import shutil
    import tempfile

    import torch

    openvino = _openvino()
    EXPORTS["count"] += 1
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.parent.name}.", dir=path.parent.parent))
    try:
        example = tuple(torch.from_numpy(a) for a in arrays)
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about every shape-dependent branch; static shapes are the point here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # OpenVINO's converter traces with torch.jit, which torch deprecates; nothing a user can change.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=DeprecationWarning)
            model = openvino.convert_model(forward, example_input=example)
        # Float32 weights on disk: the precision is chosen when compiling, and fp16-compressed
        # weights would move the output away from PyTorch's even at float32.
        openvino.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
        try:
            scratch.rename(path.parent)  # atomic: a second process sees the whole folder or none
        except OSError:
            if not path.exists():  # lost a race to another process: its folder is as good as ours
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _flat_unet(unet: Any, present: tuple[str, ...]) -> Any:
    import torch

    class FlatUNet(torch.nn.Module):
        """The UNet with positional tensor inputs (what a converter traces) and one tensor out."""

        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample: Any, timestep: Any, states: Any, *extra: Any) -> Any:
            given = dict(zip(present, extra))
            added = {k: given[k] for k in ("text_embeds", "time_ids") if k in given}
            return self.unet(sample, timestep, encoder_hidden_states=states, class_labels=given.get("class_labels"),
                             added_cond_kwargs=added or None, return_dict=False)[0]

    return FlatUNet().eval()


class ExportedUNet:
    """Called like a ``UNet2DConditionModel`` by the denoising loop; runs the converted UNet.

    Anything else (``config``, ``dtype``...) is the PyTorch UNet's, which stays loaded
    to convert new shapes. ControlNet residuals and IP-Adapter inputs are refused.
    """

    def __init__(self, unet: Any, precision: str) -> None:
        self.unet = unet
        self.config = unet.config
        self.precision = precision
        self._exported: dict[tuple[str, ...], ExportedModule] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["unet"], name)

    def __call__(self, sample: Any, timestep: Any, encoder_hidden_states: Any = None, class_labels: Any = None,
                 added_cond_kwargs: dict[str, Any] | None = None, return_dict: bool = True, **others: Any) -> Any:
        import torch
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        unsupported = sorted(name for name, value in {**others, **(added_cond_kwargs or {})}.items()
                             if value is not None and name not in _OPTIONAL_INPUTS)
        if unsupported:
            what = ("control (ControlNet residuals)" if any("residual" in n for n in unsupported)
                    else "image_prompt (IP-Adapter)" if "image_embeds" in unsupported
                    or "cross_attention_kwargs" in unsupported else ", ".join(unsupported))
            raise ValueError(f"speed.backend='openvino' with {what}: the exported UNet takes only latents, "
                             "timestep and text conditioning; drop one of the two")
        given = {"class_labels": class_labels, **(added_cond_kwargs or {})}
        present = tuple(name for name in _OPTIONAL_INPUTS if given.get(name) is not None)
        if present not in self._exported:
            kind = "+".join(("unet",) + present)  # same shapes, other inputs: another file
            self._exported[present] = ExportedModule(_flat_unet(self.unet, present), kind, self.precision)
        step = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        if step.numel() != 1 and not bool((step == step[0]).all()):
            raise ValueError("speed.backend='openvino': the exported UNet takes one timestep for the whole batch")
        step = step[0]
        output = self._exported[present].run(sample, step, encoder_hidden_states, *(given[n] for n in present))
        output = output.to(sample.dtype)
        return UNet2DConditionOutput(sample=output) if return_dict else (output,)


class ExportedDecoder:
    """A VAE whose ``decode`` runs the converted decoder; encoding and the rest stay PyTorch's."""

    def __init__(self, vae: Any, precision: str) -> None:
        import torch

        class Decode(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vae = vae

            def forward(self, latents: Any) -> Any:
                return self.vae.decode(latents, return_dict=False)[0]

        self.vae = vae
        self.config = vae.config
        self._exported = ExportedModule(Decode().eval(), "vae-decoder", precision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["vae"], name)

    def decode(self, latents: Any, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        output = self._exported.run(latents).to(latents.dtype)
        return DecoderOutput(sample=output) if return_dict else (output,)


def precision_of(dtype: str | None) -> str:
    """OpenVINO's inference precision for a recipe's ``dtype`` (float16 is refused before this)."""
    return _PRECISIONS[dtype]


def on_openvino(unet: Any, vae: Any, dtype: str | None) -> tuple[ExportedUNet, ExportedDecoder]:
    """The UNet and the VAE (decoder) run by OpenVINO at the recipe's precision; converted on first use."""
    _openvino()
    precision = precision_of(dtype)
    return ExportedUNet(unet, precision), ExportedDecoder(vae, precision)
