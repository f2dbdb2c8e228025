"""Schedulers by name: any of them samples any diffusers UNet trained with a noise schedule."""

from __future__ import annotations

from typing import Any

#: Scheduler names users write, and (diffusers class, config overrides).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)


def make_scheduler(name: str, base_config: dict[str, Any], supports_lcm: bool = False) -> Any:
    """A fresh scheduler of kind ``name`` configured from the model's training schedule."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    if name == "lcm" and not supports_lcm:
        raise ValueError("the LCM scheduler needs a latent-consistency-distilled model; this model is not one")
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config({**config, **overrides})
