"""sfumato_diffusers: diffusion generation with diffusers (built-in plugin).

Text-to-image, image-to-image and inpainting with any diffusers
``UNet2DConditionModel`` + ``AutoencoderKL`` model (the project's tiny zoo
model, Stable Diffusion 1.x/2.x, SDXL with its refiner: ``sdxl.refine``), the
SD3 and Flux transformers (``sd3.generate``, ``flux.generate``), from diffusers
folders or single ``.safetensors`` checkpoints (``singlefile``), with LoRA
stacks, ControlNets and IP-Adapters as data; schedulers chosen by name, latent
encode/decode nodes, the model library (``SFUMATO_MODELS``), and
``generate.image``, which picks the backend by model.
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_model_sources() -> list[sfumato.ModelSource]:
    from .library import model_sources

    return model_sources()  # the folders in SFUMATO_MODELS, by name and by hash


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import controlnet, flow, ip_adapter, lora, nodes, preprocess, refiner

    return [nodes.generate, nodes.vae_encode, nodes.vae_decode, nodes.generate_image, lora.lora,
            controlnet.controlnet, preprocess.edges, ip_adapter.ip_adapter, flow.flux_generate, flow.sd3_generate,
            refiner.refine]


@sfumato.hookimpl
def sfumato_port_types() -> list[Any]:
    from .controlnet import ControlStack
    from .ip_adapter import ImagePrompt
    from .lora import LoraStack

    return [sfumato.PortType("LoraStack", LoraStack, "LoRA files with their strengths, for diffusion.generate"),
            sfumato.PortType("ControlStack", ControlStack, "ControlNets with control images, for diffusion.generate"),
            sfumato.PortType("ImagePrompt", ImagePrompt, "reference images and an IP-Adapter, for diffusion.generate")]


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import tune

    tune.add_parsers(subparsers)  # sfumato tune GRAPH: the fastest speed recipe whose fidelity holds
