"""Training of the zoo models: budgeted, checkpointed, resumable.

``sfumato zoo train KIND --out DIR`` calls :func:`train`. Training state lives in
``DIR/.train/`` (weights as safetensors, optimizer state loaded with
``weights_only=True``), so an interrupted run resumes where it stopped; the
finished model is written in its loadable layout beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from . import networks
from .dataset import BACKGROUNDS, COLOURS, SHAPES, TRAIN_TEMPLATES, all_specs, images_to_array, iter_samples

KINDS = ("diffusion", "vae", "gan")
CHECKPOINT_SECONDS = 60.0
#: Probability of dropping the caption in diffusion training (classifier-free guidance).
CFG_DROPOUT = 0.1


@dataclass
class Budget:
    """Stop after ``steps`` optimizer steps or ``minutes`` of wall time, whichever first."""

    steps: int | None = None
    minutes: float | None = None

    def done(self, step: int, elapsed: float) -> bool:
        if self.steps is not None and step >= self.steps:
            return True
        return self.minutes is not None and elapsed >= self.minutes * 60

    def scaled(self, fraction: float) -> "Budget":
        return Budget(
            None if self.steps is None else max(1, int(self.steps * fraction)),
            None if self.minutes is None else self.minutes * fraction,
        )


@dataclass
class TrainingData:
    """A pre-rendered pool of images with caption embeddings."""

    images: torch.Tensor  # (N, 3, 32, 32) in [-1, 1]
    caption_index: torch.Tensor  # (N,) index into embeddings
    embeddings: torch.Tensor  # (C, 384)
    captions: list[str] = field(default_factory=list)

    def batch(self, generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(self.images), (size,), generator=generator)
        return self.images[index], self.embeddings[self.caption_index[index]]


def caption_vocabulary() -> list[str]:
    """Every training caption the dataset can produce (held-out ones excluded)."""
    return sorted({spec.caption(t) for spec in all_specs() for t in TRAIN_TEMPLATES})


def load_training_data(seed: int, count: int, encode: Callable[[list[str]], np.ndarray]) -> TrainingData:
    """Render ``count`` samples for ``seed`` and embed every training caption once."""
    captions = caption_vocabulary()
    lookup = {caption: index for index, caption in enumerate(captions)}
    samples = list(iter_samples(seed, count))
    pixels = images_to_array([s.image for s in samples])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    index = torch.tensor([lookup[s.caption] for s in samples])
    embeddings = torch.from_numpy(encode(captions)).float()
    return TrainingData(images, index, embeddings, captions)


class EMA:
    """An exponential moving average of a module's parameters."""

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.shadow[key].copy_(value)


class Checkpoint:
    """Resumable training state in ``folder``: safetensors weights + JSON progress."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def load(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             emas: dict[str, EMA]) -> dict[str, Any]:
        progress_file = self.folder / "progress.json"
        if not progress_file.exists():
            return {"step": 0, "elapsed": 0.0, "losses": []}
        for name, module in modules.items():
            module.load_state_dict(load_file(self.folder / f"{name}.safetensors"))
        for name, ema in emas.items():
            ema.shadow = load_file(self.folder / f"{name}.ema.safetensors")
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(torch.load(self.folder / f"{name}.optim.pt", weights_only=True))
        return json.loads(progress_file.read_text())

    def save(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             emas: dict[str, EMA], progress: dict[str, Any]) -> None:
        for name, module in modules.items():
            save_file(_contiguous(module.state_dict()), self.folder / f"{name}.safetensors")
        for name, ema in emas.items():
            save_file(_contiguous(ema.shadow), self.folder / f"{name}.ema.safetensors")
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), self.folder / f"{name}.optim.pt")
        tmp = self.folder / "progress.json.tmp"
        tmp.write_text(json.dumps(progress))
        tmp.replace(self.folder / "progress.json")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def run_loop(
    name: str,
    folder: Path,
    budget: Budget,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA],
    step_fn: Callable[[int], float],
    log_every: int = 50,
) -> dict[str, Any]:
    """Call ``step_fn(step)`` until the budget is spent, checkpointing as it goes.

    The loss is recorded as the mean of every ``log_every`` steps.
    """
    checkpoint = Checkpoint(folder)
    progress = checkpoint.load(modules, optimizers, emas)
    step, elapsed = int(progress["step"]), float(progress["elapsed"])
    losses: list[float] = progress["losses"]
    started, last_save = time.monotonic() - elapsed, time.monotonic()
    running: list[float] = []
    with tqdm(desc=f"train {name}", initial=step, total=budget.steps, unit="step") as bar:
        while not budget.done(step, time.monotonic() - started):
            running.append(step_fn(step))
            step += 1
            bar.update(1)
            if len(running) == log_every:
                losses.append(float(np.mean(running)))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                running = []
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                checkpoint.save(modules, optimizers, emas,
                                {"step": step, "elapsed": time.monotonic() - started, "losses": losses})
                last_save = time.monotonic()
    progress = {"step": step, "elapsed": time.monotonic() - started, "losses": losses}
    checkpoint.save(modules, optimizers, emas, progress)
    return progress


def write_record(out: Path, record: dict[str, Any]) -> None:
    """Write the provenance of a trained model: command, seed, steps, time, losses."""
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def train_autoencoder(data: TrainingData, out: Path, budget: Budget, seed: int, batch: int = 32,
                      log_every: int = 50) -> dict[str, Any]:
    """Stage 1 of latent diffusion: a diffusers AutoencoderKL from 32x32 RGB to 8x8x4."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**networks.AUTOENCODER_CONFIG)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)

    def step_fn(step: int) -> float:
        images, _ = data.batch(generator, batch)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = nn.functional.mse_loss(recon, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    progress = run_loop("autoencoder", out / ".train" / "autoencoder", budget,
                        {"vae": vae}, {"vae": optimizer}, {}, step_fn, log_every)
    # Scale latents to unit variance, as Stable Diffusion does.
    with torch.no_grad():
        latents = vae.encode(data.images[:2048]).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(out / "vae")
    return progress


def _min_snr_weight(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    snr = alphas_cumprod[timesteps] / (1 - alphas_cumprod[timesteps])
    # For v-prediction the min-SNR weight is min(snr, gamma) / (snr + 1).
    return torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)


def train_unet(data: TrainingData, out: Path, budget: Budget, seed: int, batch: int = 128,
               log_every: int = 50) -> dict[str, Any]:
    """Stage 2: a cross-attention UNet over the autoencoder's latents (v-prediction, min-SNR, EMA)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    with torch.no_grad():
        latents = torch.cat([
            vae.encode(chunk).latent_dist.mean for chunk in data.images.split(512)
        ]) * vae.config.scaling_factor
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**networks.UNET_CONFIG)
    scheduler = DDPMScheduler(**networks.SCHEDULER_CONFIG)
    ema = EMA(unet, decay=0.999)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed + 1)
    alphas = scheduler.alphas_cumprod

    def step_fn(step: int) -> float:
        index = torch.randint(0, len(latents), (batch,), generator=generator)
        x0 = latents[index]
        cond = data.embeddings[data.caption_index[index]]
        keep = (torch.rand(batch, generator=generator) > CFG_DROPOUT).float()[:, None]
        cond = cond * keep  # a zero vector is the unconditional embedding
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond[:, None, :], class_labels=cond).sample
        per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (per_sample * _min_snr_weight(alphas, t)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.update(unet)
        return loss.item()

    progress = run_loop("diffusion", out / ".train" / "unet", budget,
                        {"unet": unet}, {"unet": optimizer}, {"unet": ema}, step_fn, log_every)
    unet.load_state_dict(ema.shadow)
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    return progress


def _save_plain(module: nn.Module, state: dict[str, torch.Tensor], folder: Path, kind: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(state), folder / "model.safetensors")
    config = {"kind": kind, **module.config}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def train_vae(data: TrainingData, out: Path, budget: Budget, seed: int, batch: int = 64,
              log_every: int = 50) -> dict[str, Any]:
    """The conditional VAE (reconstruction + KL with warm-up)."""
    torch.manual_seed(seed)
    # A small code (size and position are all it needs) keeps shape and colour in the caption.
    model = networks.ConditionalVAE(z_dim=8)
    ema = EMA(model, decay=0.998)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed + 2)

    def step_fn(step: int) -> float:
        images, cond = data.batch(generator, batch)
        mean, logvar = model.encode(images, cond)
        z = mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp()
        recon = model.decode(z, cond)
        rec = ((recon - images) ** 2).sum(dim=(1, 2, 3)).mean()
        kl = (-0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=1)).mean()
        # A short KL warm-up: a long one lets the code carry the shape, which the
        # decoder then ignores in the caption (measured: shape accuracy 0.56).
        beta = min(1.0, (step + 1) / 300)
        loss = rec + beta * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        return loss.item() / (3 * 32 * 32)

    progress = run_loop("vae", out / ".train" / "vae", budget, {"vae": model}, {"vae": optimizer},
                        {"vae": ema}, step_fn, log_every)
    _save_plain(model, ema.shadow, out, "conditional-vae")
    return progress


def train_gan(data: TrainingData, out: Path, budget: Budget, seed: int, batch: int = 64,
              log_every: int = 50) -> dict[str, Any]:
    """The conditional GAN: projection discriminator, hinge loss, EMA generator."""
    torch.manual_seed(seed)
    generator_net = networks.ConditionalGenerator()
    discriminator = networks.ProjectionDiscriminator()
    ema = EMA(generator_net, decay=0.999)
    g_opt = torch.optim.Adam(generator_net.parameters(), lr=2e-4, betas=(0.0, 0.9))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.0, 0.9))
    rng = torch.Generator().manual_seed(seed + 3)
    z_dim = generator_net.config["z_dim"]

    def step_fn(step: int) -> float:
        real, cond = data.batch(rng, batch)
        z = torch.randn((batch, z_dim), generator=rng)
        fake = generator_net(z, cond)
        d_loss = (nn.functional.relu(1 - discriminator(real, cond)).mean()
                  + nn.functional.relu(1 + discriminator(fake.detach(), cond)).mean())
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        g_loss = -discriminator(fake, cond).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        ema.update(generator_net)
        return d_loss.item()

    progress = run_loop("gan", out / ".train" / "gan", budget,
                        {"generator": generator_net, "discriminator": discriminator},
                        {"generator": g_opt, "discriminator": d_opt}, {"generator": ema}, step_fn, log_every)
    _save_plain(generator_net, ema.shadow, out, "conditional-gan")
    return progress


def train(kind: str, out: Path, budget: Budget, seed: int, encode: Callable[[list[str]], np.ndarray],
          pool: int = 20000, command: str = "", batch: int | None = None, log_every: int = 50) -> dict[str, Any]:
    """Train one zoo model into ``out`` and record how it was made.

    ``batch`` overrides each stage's batch size (tests use small ones).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    out.mkdir(parents=True, exist_ok=True)
    data = load_training_data(seed, pool, encode)
    record: dict[str, Any] = {"kind": kind, "seed": seed, "pool": pool, "command": command,
                              "torch": torch.__version__}
    options: dict[str, Any] = {"log_every": log_every, **({"batch": batch} if batch else {})}
    if kind == "diffusion":
        record["autoencoder"] = _summary(train_autoencoder(data, out, budget.scaled(0.25), seed, **options))
        record["unet"] = _summary(train_unet(data, out, budget.scaled(0.75), seed, **options))
    elif kind == "vae":
        record["vae"] = _summary(train_vae(data, out, budget, seed, **options))
    else:
        record["gan"] = _summary(train_gan(data, out, budget, seed, **options))
    generator = {"diffusion": "diffusion.generate", "vae": "vae.generate", "gan": "gan.generate"}[kind]
    config = {"kind": f"tiny-shapes-{kind}", "family": kind, "generator": generator, "encoder": "all-MiniLM-L6-v2",
              "embedding_dim": 384, "image_size": 32, "unconditional": "zeros", "vocabulary": vocabulary()}
    (out / "sfumato.json").write_text(json.dumps(config, indent=2) + "\n")
    write_record(out, record)
    return record


def vocabulary() -> dict[str, list[str]]:
    """The words a zoo model knows, written into its ``sfumato.json``.

    Generators refuse a prompt that names none of them: the model would draw
    an unrelated shape for it, silently.
    """
    return {"shapes": list(SHAPES), "colours": list(COLOURS), "backgrounds": list(BACKGROUNDS)}


def _summary(progress: dict[str, Any]) -> dict[str, Any]:
    losses = progress["losses"]
    return {"steps": progress["step"], "seconds": round(progress["elapsed"], 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
