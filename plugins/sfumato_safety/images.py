"""``safety.screen_images``: run an image classifier over generated images and flag, blur or block.

The classifier is pluggable: any model name a plugin registers as a model
source, or a local folder, in one of two layouts, told apart by what the
folder declares (never by its name):

- diffusers' safety checker: a folder whose ``config.json`` names the
  ``StableDiffusionSafetyChecker`` architecture (with the CLIP
  ``preprocessor_config.json`` beside it or in a sibling
  ``feature_extractor/``), or a whole Stable Diffusion pipeline folder whose
  ``model_index.json`` lists a ``safety_checker``. Its own calibrated concept
  thresholds decide; the score is the largest concept margin (flagged above 0).
- an image classifier for transformers' ``AutoModelForImageClassification``
  (``config.json`` with ``id2label``, and an image processor): an image is
  flagged when the summed probability of the ``labels`` to flag reaches
  ``threshold``.

Weights load from safetensors only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image, ImageFilter

from sfumato import Field, ImageBatch, ModelNotFoundError, RunContext, SfumatoError, node, torch_dtype

SAFETY_CHECKER = "StableDiffusionSafetyChecker"


class ImagesBlockedError(SfumatoError):
    """Every image of a batch was blocked by image screening."""


@dataclass
class Classifier:
    """A loaded image classifier and how to read its output."""

    kind: Literal["safety-checker", "classifier"]
    model: Any
    processor: Any
    labels: dict[int, str]


def _architectures(folder: Path) -> list[str]:
    config = folder / "config.json"
    if not config.is_file():
        return []
    try:
        return list(json.loads(config.read_text(encoding="utf-8")).get("architectures") or [])
    except (ValueError, AttributeError):
        return []


def classifier_layout(folder: Path) -> tuple[str, Path, Path]:
    """``(kind, model folder, processor folder)`` for a classifier folder, or :class:`ModelNotFoundError`."""
    index = folder / "model_index.json"
    if index.is_file() and "safety_checker" in json.loads(index.read_text(encoding="utf-8")):
        return "safety-checker", folder / "safety_checker", folder / "feature_extractor"
    architectures = _architectures(folder)
    if SAFETY_CHECKER in architectures:
        processor = folder if (folder / "preprocessor_config.json").is_file() else folder.parent / "feature_extractor"
        return "safety-checker", folder, processor
    if any(name.endswith("ForImageClassification") for name in architectures):
        return "classifier", folder, folder
    raise ModelNotFoundError(
        f"input 'model': {folder} is no image classifier: expected a diffusers safety checker (config.json naming "
        f"{SAFETY_CHECKER}, or a pipeline folder whose model_index.json lists a safety_checker) or a "
        f"transformers image classifier (config.json naming a ...ForImageClassification architecture)")


def load_model(folder: Path, device: str, dtype: str) -> Any:
    """The classifier module in ``folder`` (safetensors weights only), on ``device``."""
    kind, model_folder, _ = classifier_layout(folder)
    if kind == "safety-checker":
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker as Model
    else:
        from transformers import AutoModelForImageClassification as Model
    return Model.from_pretrained(model_folder, use_safetensors=True, torch_dtype=torch_dtype(dtype)).to(device).eval()


def classifier_for(folder: Path, model: Any) -> Classifier:
    """A :class:`Classifier` around a loaded model, with the image processor from its folder."""
    from transformers import AutoImageProcessor

    kind, _, processor_folder = classifier_layout(folder)
    if not (processor_folder / "preprocessor_config.json").is_file():
        raise ModelNotFoundError(f"input 'model': {folder} has no image processor "
                                 f"(looked for {processor_folder / 'preprocessor_config.json'})")
    labels = {} if kind == "safety-checker" else {int(k): str(v) for k, v in model.config.id2label.items()}
    return Classifier(kind, model, AutoImageProcessor.from_pretrained(processor_folder), labels)


def score_images(classifier: Classifier, images: list[Image.Image], flag_labels: list[str], device: str) -> list[float]:
    """One score per image: the safety checker's largest concept margin, or the flagged labels' probability."""
    import torch

    pixels = classifier.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
    pixel_values = pixels["pixel_values"].to(device, dtype=classifier.model.dtype)
    with torch.no_grad():
        if classifier.kind == "safety-checker":
            checker = classifier.model
            embeds = checker.visual_projection(checker.vision_model(pixel_values)[1]).float()
            embeds = torch.nn.functional.normalize(embeds, dim=-1)

            def margins(concepts: Any, weights: Any) -> Any:
                return embeds @ torch.nn.functional.normalize(concepts.float(), dim=-1).T - weights.float()

            # The checker's rule (diffusers' StableDiffusionSafetyChecker.forward_onnx): a "special care"
            # hit lowers the bar for every other concept by 0.01.
            special = margins(checker.special_care_embeds, checker.special_care_embeds_weights)
            concepts = margins(checker.concept_embeds, checker.concept_embeds_weights)
            concepts = concepts + 0.01 * (special > 0).any(dim=1, keepdim=True)
            return [float(value) for value in concepts.max(dim=1).values]
        probabilities = classifier.model(pixel_values=pixel_values).logits.float().softmax(dim=-1)
    wanted = {label.casefold() for label in flag_labels}
    columns = [index for index, label in classifier.labels.items() if label.casefold() in wanted]
    return [float(row[columns].sum()) if columns else 0.0 for row in probabilities]


def _check_labels(classifier: Classifier, flag_labels: list[str]) -> None:
    if classifier.kind != "classifier":
        return
    known = {label.casefold() for label in classifier.labels.values()}
    if not any(label.casefold() in known for label in flag_labels):
        raise ValueError(f"input 'labels': none of {flag_labels} is a label of the classifier; its labels are "
                         f"{sorted(classifier.labels.values())}")


def blurred(image: Image.Image) -> Image.Image:
    """``image`` blurred beyond recognition (radius: an eighth of its longer side)."""
    return image.filter(ImageFilter.GaussianBlur(max(image.size) / 8))


@node("safety.screen_images", category="safety", outputs={"images": ImageBatch, "screening": dict})
def screen_images(
    images: ImageBatch,
    model: str,
    context: RunContext,
    action: Literal["flag", "blur", "block"] = "blur",
    labels: list[str] = ["nsfw"],  # noqa: B006 - never mutated; JSON literal default
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5,
) -> dict[str, Any]:
    """Screen generated images with an image classifier; flag, blur or block what it finds.

    ``model`` is a model source name or a folder: diffusers' safety checker
    (its own folder, or a Stable Diffusion pipeline folder that has one) or a
    transformers image classifier. ``flag`` passes every image and reports
    the flagged ones in ``screening``; ``blur`` replaces them by a heavy blur;
    ``block`` drops them from the batch, and stops the run when none is left.

    Args:
        images: the images to screen.
        model: the classifier: a model name or a local folder.
        action: what to do with a flagged image: flag, blur or block.
        labels: for a classifier with labels: the labels that flag an image.
        threshold: for a classifier with labels: the probability of those labels that flags an image.
    """
    path = context.models.resolve(model)
    if isinstance(path, str):
        raise ModelNotFoundError(f"input 'model': {model!r} is not a local folder or model name "
                                 f"(image classifiers load from disk only)")
    device, dtype = context.device, context.dtype
    # The manager loads each classifier once per device and dtype (and counts its memory).
    module = context.models.get(f"image-classifier:{path}", device, dtype,
                                lambda: load_model(Path(path), device, dtype))
    loaded = classifier_for(Path(path), module)
    _check_labels(loaded, labels)
    scores = score_images(loaded, list(images.images), labels, device)
    flagged = [index for index, score in enumerate(scores)
               if (score > 0.0 if loaded.kind == "safety-checker" else score >= threshold)]
    kept_images, kept_labels = list(images.images), list(images.labels)
    if action == "blur":
        kept_images = [blurred(image) if index in flagged else image for index, image in enumerate(kept_images)]
    elif action == "block" and flagged:
        if len(flagged) == len(kept_images):
            raise ImagesBlockedError(f"image screening blocked every image ({len(flagged)} of {len(scores)}; "
                                     f"scores {', '.join(f'{s:.3f}' for s in scores)})")
        kept_images = [image for index, image in enumerate(kept_images) if index not in flagged]
        kept_labels = [label for index, label in enumerate(kept_labels) if index not in flagged]
    screening = {
        "verdict": "flagged" if flagged else "passed",
        "action": action,
        "flagged": ", ".join(map(str, flagged)),
        "count": len(flagged),
        "scores": ", ".join(f"{score:.3f}" for score in scores),
        "classifier": loaded.kind,
    }
    return {"images": ImageBatch(tuple(kept_images), tuple(kept_labels)), "screening": screening}

