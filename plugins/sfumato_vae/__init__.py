"""sfumato_vae: generation with conditional VAEs such as the zoo's tiny-shapes-vae (built-in plugin)."""

from __future__ import annotations

from typing import Annotated, Any

import sfumato
from sfumato import Conditioning, Field, ImageBatch, RunContext, image_seeds, node


@node("vae.generate", category="generate", output="images")
def generate(
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

    from sfumato_zoo.checkpoints import check_conditioning, latent_noise, load_generator, to_images

    vae = load_generator(context, model, "conditional-vae")
    vectors = check_conditioning(vae, conditioning, model).repeat_interleave(batch_size, dim=0).to(context.device)
    seeds = image_seeds(seed, len(vectors))
    z = latent_noise(seeds, vae.config["z_dim"]).to(context.device) * temperature
    with torch.inference_mode():
        pixels = vae.decode(z, vectors)
    labels = [t for t in (conditioning.texts or ("",) * len(conditioning)) for _ in range(batch_size)]
    return to_images(pixels, labels)


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [generate]
