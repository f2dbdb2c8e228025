"""sfumato_zoo: the project's tiny offline models, their dataset, judge and training (built-in plugin).

Registers the model sources ``tiny-shapes-diffusion``, ``tiny-shapes-vae``,
``tiny-shapes-gan`` and ``tiny-shapes-lcm`` (its 1-2 step distilled student;
weights shipped in this package), the generator nodes of the VAE and GAN
backends (``vae.generate``, ``gan.generate``), the ``zoo.score`` node, and the
``sfumato zoo`` command (train, distill, eval, grid, layouts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sfumato

WEIGHTS = Path(__file__).resolve().parent / "weights"
#: Each shipped model: its description, and the node that generates with it (``generate.image`` dispatches there).
MODELS = {
    "tiny-shapes-diffusion": ("latent diffusion (UNet2DConditionModel + AutoencoderKL), 32x32, MiniLM-conditioned",
                              "diffusion.generate"),
    "tiny-shapes-vae": ("conditional VAE, 32x32, MiniLM-conditioned", "vae.generate"),
    "tiny-shapes-gan": ("conditional GAN (projection discriminator, hinge loss), 32x32, MiniLM-conditioned",
                        "gan.generate"),
    "tiny-shapes-lcm": (("latent consistency model distilled from tiny-shapes-diffusion: 1-2 steps with "
                         "scheduler=lcm, guidance=1 (guidance 3 is in its weights)"), "diffusion.generate"),
}


@sfumato.hookimpl
def sfumato_model_sources() -> list[sfumato.ModelSource]:
    return [sfumato.ModelSource(name, WEIGHTS / name, description, kind=name.rsplit("-", 1)[1], generator=generator)
            for name, (description, generator) in MODELS.items()]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import generators, nodes

    return [nodes.score, nodes.judge, nodes.render_shapes, generators.vae_generate, generators.gan_generate]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
