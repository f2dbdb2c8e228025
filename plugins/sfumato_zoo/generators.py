"""Generator nodes for the zoo's conditional VAE and GAN (``vae.generate``, ``gan.generate``).

Both decode one latent code per image under the prompt's pooled sentence
embedding in a single forward pass; the networks and their loading live in
``networks.py`` and ``checkpoints.py`` beside this module.
"""

from __future__ import annotations

from typing import Annotated

from sfumato import Conditioning, Field, ImageBatch, RunContext, image_seeds, node

from .checkpoints import check_conditioning, latent_noise, load_generator, to_images


@node("vae.generate", category="generate", output="images")
def vae_generate(
    conditioning: Conditioning,
    context: RunContext,
    model: str = "tiny-shapes-vae",
    batch_size: Annotated[int, Field(ge=1, le=256)] = 1,
    seed: int = 0,
    temperature: Annotated[float, Field(ge=0, le=3)] = 0.7,
) -> ImageBatch:
    """Decode random latent codes under the prompt's conditioning with a conditional VAE.

    Each image's code comes from its own seed (:func:`sfumato.image_seed` of
    ``seed`` and its index), so batches and single images agree.

    Args:
        conditioning: prompts from ``encode.text`` (the pooled sentence embedding is used).
        model: a model name or a folder with config.json + model.safetensors.
        batch_size: images per prompt.
        seed: the first image's seed.
        temperature: scales the latent noise; 0.7 (reduced-temperature sampling) trades a little
            variety for fidelity, 0 gives the mean image.
    """
    import torch

    vae = load_generator(context, model, "conditional-vae")
    vectors = check_conditioning(vae, conditioning, model).repeat_interleave(batch_size, dim=0).to(context.device)
    seeds = image_seeds(seed, len(vectors))
    z = latent_noise(seeds, vae.config["z_dim"]).to(context.device) * temperature
    with torch.inference_mode():
        pixels = vae.decode(z, vectors)
    labels = [t for t in (conditioning.texts or ("",) * len(conditioning)) for _ in range(batch_size)]
    return to_images(pixels, labels)


@node("gan.generate", category="generate", output="images")
def gan_generate(
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

    generator = load_generator(context, model, "conditional-gan")
    vectors = check_conditioning(generator, conditioning, model).repeat_interleave(batch_size, dim=0).to(context.device)
    seeds = image_seeds(seed, len(vectors))
    z = latent_noise(seeds, generator.config["z_dim"]).to(context.device) * truncation
    with torch.inference_mode():
        pixels = generator(z, vectors)
    labels = [t for t in (conditioning.texts or ("",) * len(conditioning)) for _ in range(batch_size)]
    return to_images(pixels, labels)
