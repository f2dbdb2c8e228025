"""The tiny networks of the model zoo: diffusers configs for the latent
diffusion model, and plain torch modules for the conditional VAE and GAN.

Every network is built from a JSON-able config dict, so a checkpoint is a
``config.json`` beside a ``model.safetensors`` and loads without pickle.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: The autoencoder that maps 32x32 RGB to an 8x8x4 latent (diffusers AutoencoderKL).
AUTOENCODER_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
}

#: The denoiser over 8x8x4 latents (diffusers UNet2DConditionModel).
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [64, 128],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "layers_per_block": 1,
    "cross_attention_dim": 384,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    # The pooled caption embedding also enters through the time embedding: a
    # strong global signal for colour and background, which cross-attention
    # over a single token alone learns slowly.
    "class_embed_type": "projection",
    "projection_class_embeddings_input_dim": 384,
}

#: The noise schedule used for training and saved beside the UNet.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    # "leading" keeps multistep solvers from starting at the pure-noise end of a
    # cosine schedule, where they diverge.
    "timestep_spacing": "leading",
    "clip_sample": False,
}


class FiLM(nn.Module):
    """Scale and shift feature maps by a function of the conditioning vector."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * channels)

    def forward(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(cond).chunk(2, dim=1)
        return features * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class UpBlock(nn.Module):
    """Nearest upsampling, a 3x3 convolution, normalisation, FiLM and SiLU."""

    def __init__(self, cond_dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(8, out_channels)
        self.film = FiLM(cond_dim, out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return nn.functional.silu(self.film(self.norm(self.conv(x)), cond))


class ConditionalDecoder(nn.Module):
    """Map (latent code, caption embedding) to a 32x32 RGB image in [-1, 1].

    Shared by the VAE decoder and the GAN generator.
    """

    def __init__(self, z_dim: int, cond_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Linear(z_dim + cond_dim, width * 4 * 4 * 2)
        self.blocks = nn.ModuleList([
            UpBlock(cond_dim, width * 2, width * 2),  # 8x8
            UpBlock(cond_dim, width * 2, width),  # 16x16
            UpBlock(cond_dim, width, width),  # 32x32
        ])
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat([z, cond], dim=1)).view(-1, self.width * 2, 4, 4)
        x = nn.functional.silu(x)
        for block in self.blocks:
            x = block(x, cond)
        return torch.tanh(self.out(x))


def _down_stack(width: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = [3, width, width * 2, width * 4]
    for c_in, c_out in zip(channels, channels[1:]):
        layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
        if norm:
            layers.append(nn.GroupNorm(8, c_out))
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class ConditionalVAE(nn.Module):
    """A conditional VAE: the caption embedding conditions encoder and decoder."""

    def __init__(self, z_dim: int = 32, cond_dim: int = 384, width: int = 48) -> None:
        super().__init__()
        self.config = {"z_dim": z_dim, "cond_dim": cond_dim, "width": width}
        self.encoder = _down_stack(width, norm=True)
        self.to_stats = nn.Linear(width * 4 * 4 * 4 + cond_dim, 2 * z_dim)
        self.decoder = ConditionalDecoder(z_dim, cond_dim, width)

    def encode(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images).flatten(1)
        mean, logvar = self.to_stats(torch.cat([features, cond], dim=1)).chunk(2, dim=1)
        return mean, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, cond)


class ConditionalGenerator(nn.Module):
    """The GAN generator: noise + caption embedding to an image."""

    def __init__(self, z_dim: int = 64, cond_dim: int = 384, width: int = 64) -> None:
        super().__init__()
        self.config = {"z_dim": z_dim, "cond_dim": cond_dim, "width": width}
        self.decoder = ConditionalDecoder(z_dim, cond_dim, width)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, cond)


class ProjectionDiscriminator(nn.Module):
    """A discriminator with a projection term (Miyato & Koyama, 2018)."""

    def __init__(self, cond_dim: int = 384, width: int = 64) -> None:
        super().__init__()
        self.features = _down_stack(width, norm=False)
        feature_dim = width * 4 * 4 * 4
        self.linear = nn.utils.spectral_norm(nn.Linear(feature_dim, 1))
        self.project = nn.utils.spectral_norm(nn.Linear(cond_dim, feature_dim))

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.features(images).flatten(1)
        return self.linear(h).squeeze(1) + (self.project(cond) * h).sum(dim=1)
