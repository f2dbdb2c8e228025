"""Latent consistency distillation of the zoo's diffusion model: a 1-2 step student.

``sfumato zoo distill --out DIR`` calls :func:`distill`. It follows latent
consistency distillation (LCD; Luo et al., 2023, "Latent Consistency Models"),
as diffusers' ``examples/consistency_distillation/train_lcm_distill_sd_wds.py``
does it:

- the student starts as a copy of the teacher's UNet (same architecture, so
  the shipped folder has the teacher's layout and loads like it);
- the teacher's classifier-free guidance (scale ``guidance``) is baked into
  the student: it learns the guided trajectory, so sampling needs one UNet
  call per step and no unconditional batch;
- a skip-step DDIM solver over ``solver_steps`` timesteps (every 20th of 1000)
  moves the noised data latent one skip with the guided teacher, and the
  student's consistency output at the start must equal the target network's
  output at the end; the target is an EMA of the student (decay ``target_decay``);
- the consistency parametrisation ``c_skip * x_t + c_out * x0(x_t)`` uses
  diffusers' ``LCMScheduler`` boundary scalings (``timestep_scaling`` 10), and
  the loss is the pseudo-Huber distance (c = 0.001);
- the data are the teacher's: the zoo's procedural images (seed, pool) through
  the teacher's own VAE, and their training captions' embeddings.

Every random draw of step ``n`` comes from a generator seeded by ``(seed, n)``,
so a run that is interrupted and resumed makes the same updates as one that
was not. Training state lives in ``DIR/.train/lcm`` (see ``training.py``); the
loadable model (``unet/``, ``vae/``, ``scheduler/``, ``sfumato.json``,
``training.json``) is written beside it, sampled with ``scheduler="lcm"``,
1-2 steps and ``guidance=1`` (the guidance is already in the weights).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .training import EMA, Budget, _contiguous, _summary, load_training_data, run_loop, vocabulary, write_record

#: The sampling settings a distilled model is made for, written into its ``sfumato.json``.
SAMPLING_DEFAULTS: dict[str, Any] = {"scheduler": "lcm", "steps": 2, "guidance": 1.0}
#: Which network of the training state to export: the EMA target, the online student, or its slow average.
EXPORTABLE = ("target", "student", "average")
HUBER_C = 0.001
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary_scalings(timesteps: torch.Tensor, scaling: float = TIMESTEP_SCALING) -> tuple[torch.Tensor, torch.Tensor]:
    """``c_skip`` and ``c_out`` of the consistency parametrisation, as ``LCMScheduler`` computes them."""
    scaled = timesteps.float() * scaling
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def solver_timesteps(train_steps: int, solver_steps: int) -> torch.Tensor:
    """The DDIM solver's timesteps, ascending: ``k-1, 2k-1, ..., train_steps-1`` (as LCMScheduler's origin steps)."""
    ratio = train_steps // solver_steps
    return torch.arange(1, solver_steps + 1) * ratio - 1


def _predicted_x0_eps(output: torch.Tensor, sample: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                      prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean latent and the noise a UNet output implies (``alpha``/``sigma`` broadcast over the batch)."""
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * output, sigma * sample + alpha * output
    if prediction_type == "epsilon":
        return (sample - sigma * output) / alpha, output
    if prediction_type == "sample":
        return output, (sample - alpha * output) / sigma
    raise ValueError(f"prediction type {prediction_type!r} is not supported by the distillation")


def _huber(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (torch.sqrt((prediction.float() - target.float()) ** 2 + HUBER_C**2) - HUBER_C).mean()


class Teacher:
    """The teacher folder's UNet, VAE and noise schedule, frozen."""

    def __init__(self, folder: Path) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        for part in ("unet", "vae", "scheduler"):
            if not (folder / part).is_dir():
                raise FileNotFoundError(f"teacher {folder} is not a zoo diffusion folder: missing {part}/")
        self.folder = folder
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval().requires_grad_(False)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval().requires_grad_(False)
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        info_file = folder / "sfumato.json"
        self.info: dict[str, Any] = json.loads(info_file.read_text()) if info_file.exists() else {}

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents of images in [-1, 1] (the distribution the UNet was trained on)."""
        return torch.cat([self.vae.encode(chunk).latent_dist.mean for chunk in images.split(512)]) \
            * self.vae.config.scaling_factor


def distill(teacher_folder: Path, out: Path, budget: Budget, seed: int, encode: Callable[[list[str]], np.ndarray],
            *, pool: int = 20000, batch: int = 64, guidance: float = 3.0, learning_rate: float = 1e-4,
            solver_steps: int = 50, target_decay: float = 0.95, average_decay: float = 0.999,
            export: str = "target", command: str = "", teacher_name: str = "", log_every: int = 50,
            half: bool = False) -> dict[str, Any]:
    """Distil a 1-2 step latent consistency model from ``teacher_folder`` into ``out``.

    Resumes from ``out/.train/lcm`` when it exists. Returns the provenance
    record also written to ``out/training.json``.

    Args:
        teacher_folder: a zoo diffusion folder (``unet/``, ``vae/``, ``scheduler/``).
        out: where the distilled model and its training state go.
        budget: optimizer steps or wall-clock minutes (resumed runs count from the start).
        seed: the data seed (the teacher's, by default) and the base of every step's random draws.
        encode: texts -> (N, 384) sentence embeddings (the zoo's ``encode.sentence``).
        pool: rendered training images.
        batch: latents per step.
        guidance: the teacher's classifier-free guidance scale that the student bakes in.
        learning_rate: AdamW's learning rate.
        solver_steps: the skip-step DDIM solver's number of timesteps over the schedule.
        target_decay: EMA decay of the target network.
        average_decay: EMA decay of a slow average of the student (exportable as ``"average"``).
        export: which network becomes ``unet/``: ``target``, ``student`` or ``average``.
        command: the command line, for the provenance record.
        teacher_name: the teacher's model name, for the provenance record.
        log_every: the loss is recorded as the mean of this many steps.
        half: store the exported UNet's weights as float16 (half the bytes; loaded as float32).
    """
    if export not in EXPORTABLE:
        raise ValueError(f"export: {export!r}; choose one of {', '.join(EXPORTABLE)}")
    teacher = Teacher(teacher_folder)
    out.mkdir(parents=True, exist_ok=True)
    data = load_training_data(seed, pool, encode)
    latents = teacher.latents(data.images)
    cond_bank = data.embeddings[data.caption_index]
    uncond = torch.zeros(1, 1, cond_bank.shape[-1])  # zoo models: the zero vector is the unconditional input

    torch.manual_seed(seed)
    student = copy.deepcopy(teacher.unet).train().requires_grad_(True)
    target = copy.deepcopy(teacher.unet).eval().requires_grad_(False)
    average = EMA(student, decay=average_decay)
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.0)

    schedule = teacher.scheduler
    prediction_type = schedule.config.prediction_type
    alphas = schedule.alphas_cumprod.sqrt()
    sigmas = (1 - schedule.alphas_cumprod).sqrt()
    solver = solver_timesteps(schedule.config.num_train_timesteps, solver_steps)
    skip = int(solver[0]) + 1

    def per_sample(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return values[t][:, None, None, None]

    def step_fn(step: int) -> float:
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)  # the same draws when resumed
        index = torch.randint(0, len(latents), (batch,), generator=rng)
        x0, cond = latents[index], cond_bank[index][:, None, :]
        start = solver[torch.randint(0, solver_steps, (batch,), generator=rng)]
        end = (start - skip).clamp(min=0)
        noise = torch.randn(x0.shape, generator=rng)
        a_start, s_start = per_sample(alphas, start), per_sample(sigmas, start)
        noisy = a_start * x0 + s_start * noise

        # The student's consistency output at the start of the skip.
        c_skip, c_out = (c[:, None, None, None] for c in boundary_scalings(start))
        output = student(noisy, start, encoder_hidden_states=cond, class_labels=cond[:, 0]).sample
        student_x0, _ = _predicted_x0_eps(output, noisy, a_start, s_start, prediction_type)
        prediction = c_skip * noisy + c_out * student_x0

        with torch.no_grad():
            # One guided DDIM step of the teacher from start to end.
            both = torch.cat([uncond.expand(batch, 1, -1), cond])
            teacher_out = teacher.unet(torch.cat([noisy, noisy]), torch.cat([start, start]),
                                       encoder_hidden_states=both, class_labels=both[:, 0]).sample
            unconditional, conditional = teacher_out.chunk(2)
            guided = unconditional + guidance * (conditional - unconditional)
            teacher_x0, teacher_eps = _predicted_x0_eps(guided, noisy, a_start, s_start, prediction_type)
            previous = per_sample(alphas, end) * teacher_x0 + per_sample(sigmas, end) * teacher_eps
            # The target network's consistency output at the end of the skip.
            c_skip_end, c_out_end = (c[:, None, None, None] for c in boundary_scalings(end))
            target_out = target(previous, end, encoder_hidden_states=cond, class_labels=cond[:, 0]).sample
            target_x0, _ = _predicted_x0_eps(target_out, previous, per_sample(alphas, end),
                                             per_sample(sigmas, end), prediction_type)
            wanted = c_skip_end * previous + c_out_end * target_x0

        loss = _huber(prediction, wanted)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for target_param, student_param in zip(target.parameters(), student.parameters()):
                target_param.mul_(target_decay).add_(student_param.detach(), alpha=1 - target_decay)
        average.update(student)
        return loss.item()

    progress = run_loop("lcm", out / ".train" / "lcm", budget, {"student": student, "target": target},
                        {"student": optimizer}, {"student": average}, step_fn, log_every)
    settings = {"guidance": guidance, "batch": batch, "learning_rate": learning_rate, "solver_steps": solver_steps,
                "target_decay": target_decay, "average_decay": average_decay, "huber_c": HUBER_C,
                "timestep_scaling": TIMESTEP_SCALING}
    export_model(out, teacher_folder, export, half=half, teacher_name=teacher_name, guidance=guidance)
    record: dict[str, Any] = {"kind": "lcm", "seed": seed, "pool": pool, "command": command,
                              "torch": torch.__version__, "teacher": teacher_name or str(teacher_folder),
                              "method": "latent consistency distillation (Luo et al. 2023), guidance baked in",
                              "settings": settings, "exported": export, "lcm": _summary(progress)}
    write_record(out, record)
    return record


def export_model(out: Path, teacher_folder: Path, which: str = "target", *, half: bool = False,
                 teacher_name: str = "", guidance: float = 3.0, to: Path | None = None) -> Path:
    """Write the loadable folder of the current training state (``to``, default ``out``).

    Also used on a running distillation's checkpoint, to evaluate it while training goes on.
    """
    from diffusers import LCMScheduler, UNet2DConditionModel

    if which not in EXPORTABLE:
        raise ValueError(f"export: {which!r}; choose one of {', '.join(EXPORTABLE)}")
    state_dir = out / ".train" / "lcm"
    file = state_dir / {"target": "target.safetensors", "student": "student.safetensors",
                        "average": "student.ema.safetensors"}[which]
    if not file.exists():
        raise FileNotFoundError(f"no distillation checkpoint at {file}: run `sfumato zoo distill` first")
    destination = to or out
    unet = UNet2DConditionModel.from_pretrained(teacher_folder, subfolder="unet")
    unet.load_state_dict(load_file(file))
    unet.save_pretrained(destination / "unet")
    if half:  # float16 storage; diffusers loads it into the float32 model the config describes
        weights = destination / "unet" / "diffusion_pytorch_model.safetensors"
        save_file({k: v.half() if v.is_floating_point() else v for k, v in _contiguous(unet.state_dict()).items()},
                  weights)
    if (destination / "vae").exists():
        shutil.rmtree(destination / "vae")
    shutil.copytree(teacher_folder / "vae", destination / "vae")
    scheduler_config = json.loads((teacher_folder / "scheduler" / "scheduler_config.json").read_text())
    accepted = set(LCMScheduler.from_config({}).config)
    lcm = LCMScheduler.from_config({k: v for k, v in scheduler_config.items() if k in accepted},
                                   timestep_scaling=TIMESTEP_SCALING)
    lcm.save_pretrained(destination / "scheduler")
    info_file = teacher_folder / "sfumato.json"
    teacher_info = json.loads(info_file.read_text()) if info_file.exists() else {}
    info = {"kind": "tiny-shapes-lcm", "family": "diffusion", "generator": "diffusion.generate", "lcm": True,
            "teacher": teacher_name or teacher_info.get("kind", str(teacher_folder)),
            "guidance_in_weights": guidance, "defaults": dict(SAMPLING_DEFAULTS),
            **{k: teacher_info[k] for k in ("encoder", "embedding_dim", "image_size", "unconditional")
               if k in teacher_info},
            "vocabulary": teacher_info.get("vocabulary", vocabulary())}
    (destination / "sfumato.json").write_text(json.dumps(info, indent=2) + "\n")
    return destination


def sampling_defaults(folder: Path) -> dict[str, Any]:
    """The settings a model folder is made for (``defaults`` in its ``sfumato.json``), or ``{}``."""
    info_file = folder / "sfumato.json"
    if not info_file.exists():
        return {}
    return dict(json.loads(info_file.read_text()).get("defaults", {}))
