"""sfumato_gan: generation with conditional GANs such as the zoo's tiny-shapes-gan (built-in plugin)."""

from __future__ import annotations

from typing import Annotated, Any

import sfumato
from sfumato import Conditioning, Field, ImageBatch, RunContext, image_seeds, node


@node("gan.generate", category="generate", output="images")
def generate(
    conditioning: Conditioning,
    context: RunContext,
    model: str = "tiny-shapes-gan",
    batch_size: Annotated[int, Field(ge=1, le=256)] = 1,
    seed: int = 0,
    truncation: Annotated[float, Field(gt=0, le=3)] = 1.0,
) -> ImageBatch:
    """Generate images with a conditional GAN generator in one forward pass.

    Args:
        conditioning: prompts from ``encode.text`` (the pooled sentence embedding is used).
        model: a model name or a folder with config.json + model.safetensors.
        batch_size: images per prompt.
        seed: the first image's seed (image i uses ``sfumato.image_seed(seed, i)``).
        truncation: scales the noise; below 1 trades variety for fidelity.
    """
    import torch

    from sfumato_zoo.checkpoints import check_conditioning, latent_noise, load_generator, to_images

    generator = load_generator(context, model, "conditional-gan")
    vectors = check_conditioning(generator, conditioning, model).repeat_interleave(batch_size, dim=0).to(context.device)
    seeds = image_seeds(seed, len(vectors))
    z = latent_noise(seeds, generator.config["z_dim"]).to(context.device) * truncation
    with torch.inference_mode():
        pixels = generator(z, vectors)
    labels = [t for t in (conditioning.texts or ("",) * len(conditioning)) for _ in range(batch_size)]
    return to_images(pixels, labels)


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [generate]
