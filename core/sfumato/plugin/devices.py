"""Device and dtype resolution.

``auto`` picks CUDA, then MPS, then CPU; the ``auto`` dtype is bfloat16 on a
GPU that supports it (float16 otherwise) and float32 on CPU. torch is imported
only when a node actually asks for the device, so graphs without models never
pay for it.
"""

from __future__ import annotations

import re

from ..errors import ParameterError


class DeviceError(ParameterError, ValueError):
    """A device or dtype name that is malformed, or names hardware this machine lacks.

    A :class:`ParameterError` (bad input: exit code 2) and, for callers that
    check names with ``except ValueError``, a ``ValueError``.
    """


DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """Validate a device string without importing torch."""
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise DeviceError(f"unknown device {device!r:.60}; use auto, cpu, cuda, cuda:N or mps")
    return device


def check_dtype_name(dtype: str) -> str:
    if dtype not in DTYPE_CHOICES:
        raise DeviceError(f"unknown dtype {dtype!r:.60}; use one of {', '.join(DTYPE_CHOICES)}")
    return dtype


def check_device_available(device: str) -> str:
    """Check that an explicitly asked-for GPU exists, before anything loads.

    ``auto`` and ``cpu`` always work and import nothing; ``cuda[:N]`` and
    ``mps`` import torch to ask it. Raises :class:`DeviceError` naming what
    is missing.
    """
    check_device_name(device)
    if device in ("auto", "cpu"):
        return device
    return resolve_device(device)


def resolve_device(device: str) -> str:
    """Turn ``auto`` into the best available device; check an explicit one exists."""
    check_device_name(device)
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was asked for, but torch sees no CUDA GPU "
                              "(use --device cpu, or auto to take a GPU when there is one)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist; {torch.cuda.device_count()} GPU(s) found")
        return f"cuda:{index}"
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was asked for, but MPS is not available (use --device cpu)")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """Turn ``auto`` into float32 on CPU and a half type on GPUs."""
    check_dtype_name(dtype)
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def torch_dtype(name: str):
    """The ``torch.dtype`` for a dtype name."""
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
