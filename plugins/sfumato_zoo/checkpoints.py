"""Loading the zoo's plain-torch generators (conditional VAE and GAN) from safetensors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from sfumato import Conditioning, ImageBatch, ModelNotFoundError, RunContext

FAMILIES = {"conditional-vae": "vae", "conditional-gan": "gan"}


def load_generator(context: RunContext, name: str, expected_kind: str) -> Any:
    """Load a ``config.json`` + ``model.safetensors`` generator once per process."""
    preparing = time.perf_counter()  # finding the model and the device (torch's import) is part of a load
    path = context.models.resolve(name)
    if isinstance(path, str):
        raise ModelNotFoundError(f"model {name!r} must be a local folder for a {expected_kind} checkpoint")
    config_file, weights_file = Path(path) / "config.json", Path(path) / "model.safetensors"
    if not config_file.exists() or not weights_file.exists():
        raise ModelNotFoundError(f"model {name!r} at {path}: expected config.json and model.safetensors")
    config = json.loads(config_file.read_text())
    if config.get("kind") != expected_kind:
        raise ValueError(f"model {name!r} is a {config.get('kind')!r}, not a {expected_kind!r}")

    def load() -> Any:
        from safetensors.torch import load_file

        from . import networks

        arguments = {k: v for k, v in config.items() if k != "kind"}
        if expected_kind == "conditional-vae":
            module = networks.ConditionalVAE(**arguments)
        else:
            module = networks.ConditionalGenerator(**arguments)
        module.load_state_dict(load_file(str(weights_file)))
        module.vocabulary = _read_vocabulary(Path(path))
        return module.eval().to(context.device)

    return context.models.get(f"{expected_kind}:{name}", context.device, "float32", load,
                              preparing_since=preparing)


def _read_vocabulary(folder: Path) -> dict[str, list[str]]:
    info_file = folder / "sfumato.json"
    return json.loads(info_file.read_text()).get("vocabulary", {}) if info_file.exists() else {}


def check_vocabulary(module: Any, prompts: tuple[str, ...], name: str) -> None:
    """Refuse a prompt that uses no word the model knows (it would draw an unrelated picture)."""
    vocabulary = getattr(module, "vocabulary", None) or {}
    known = {word for words in vocabulary.values() for word in words}
    for prompt in prompts if known else ():
        words = set(re.findall(r"[a-z]+", prompt.lower()))
        if words and not words & known:  # an empty prompt is the unconditional image
            kinds = "; ".join(f"{kind}: {', '.join(words)}" for kind, words in vocabulary.items())
            raise ValueError(
                f"the prompt {prompt!r} is outside the vocabulary of model {name!r}, which only knows "
                f"{kinds}; it would draw an unrelated picture. Describe one of those, or use a model "
                f"trained on your subject (--set model=FOLDER)")


def check_conditioning(module: Any, conditioning: Conditioning, name: str) -> Any:
    """The pooled embedding (N, dim) after checking its width and that its prompts are in the vocabulary."""
    check_vocabulary(module, conditioning.texts, name)
    cond_dim = module.config["cond_dim"]
    vectors = conditioning.pooled if conditioning.pooled is not None else conditioning.states[:, 0]
    if int(vectors.shape[-1]) != cond_dim:
        raise ValueError(f"model {name!r} expects {cond_dim}-wide conditioning, got {int(vectors.shape[-1])} "
                         f"from encoder {conditioning.encoder!r}")
    return vectors.float()


def latent_noise(seeds: list[int], dim: int) -> Any:
    """One normal vector per image, from the image's own seed (batch-independent)."""
    import torch

    return torch.stack([torch.randn(dim, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


def to_images(pixels: Any, labels: list[str]) -> ImageBatch:
    import torch
    from PIL import Image

    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return ImageBatch(tuple(Image.fromarray(a) for a in array), tuple(labels) if any(labels) else ())
