"""sfumato_fusion: combine prompt conditioning with retrieved references (built-in plugin)."""

from __future__ import annotations

from typing import Annotated, Any

import sfumato
from sfumato import Conditioning, Field, ImageBatch, Retrieved, RunContext, node


def _check_same_encoder(a: Conditioning, b: Conditioning, what: str) -> None:
    if a.encoder != b.encoder or a.width != b.width:
        raise ValueError(f"cannot {what} conditioning from {a.encoder!r} ({a.width}-wide) with "
                         f"{b.encoder!r} ({b.width}-wide): encode both with the same model")


@node("fuse.mix", category="fusion", output="conditioning")
def mix(conditioning: Conditioning, reference: Conditioning,
        weight: Annotated[float, Field(ge=0, le=1)] = 0.3, normalize: bool = True) -> Conditioning:
    """Weighted average of the prompt's conditioning and the mean of reference conditionings.

    ``reference`` usually encodes the captions of retrieved images (one or
    more); their mean is blended in with ``weight`` (0 = prompt only). With
    sentence-encoder conditioning the result is renormalised to unit length,
    as the zoo models expect. The generator downstream needs conditioning from
    the same encoder (checked here and at validation of the generator).

    Args:
        conditioning: the prompt, one or more.
        reference: references to blend in (averaged).
        weight: the share of the references.
        normalize: rescale each pooled vector to unit length (sentence encoders).
    """
    import torch

    _check_same_encoder(conditioning, reference, "mix")
    if conditioning.sequence_length != reference.sequence_length:
        raise ValueError(f"sequence lengths differ ({conditioning.sequence_length} vs {reference.sequence_length}); "
                         "use fuse.concat, or encode with the same max_length")
    states = (1 - weight) * conditioning.states + weight * reference.states.mean(dim=0, keepdim=True)
    pooled = None
    if conditioning.pooled is not None and reference.pooled is not None:
        pooled = (1 - weight) * conditioning.pooled + weight * reference.pooled.mean(dim=0, keepdim=True)
    if normalize and conditioning.sequence_length == 1:
        states = torch.nn.functional.normalize(states, dim=-1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1) if pooled is not None else None
    return Conditioning(states, conditioning.encoder, conditioning.width, conditioning.sequence_length, pooled,
                        conditioning.texts)


@node("fuse.concat", category="fusion", output="conditioning")
def concat(conditioning: Conditioning, reference: Conditioning) -> Conditioning:
    """Concatenate reference tokens after the prompt's tokens (along the sequence axis).

    The generator cross-attends to both. Its UNet must accept the longer
    sequence (cross-attention does; models that add pooled embeddings get the
    prompt's pooled output unchanged). References are averaged to one batch
    row, then appended to every prompt.
    """
    import torch

    _check_same_encoder(conditioning, reference, "concatenate")
    extra = reference.states.mean(dim=0, keepdim=True).expand(len(conditioning), -1, -1)
    states = torch.cat([conditioning.states, extra], dim=1)
    return Conditioning(states, conditioning.encoder, conditioning.width, int(states.shape[1]),
                        conditioning.pooled, conditioning.texts)


@node("fuse.reference_image", category="fusion", output="images", cache=sfumato.CachePolicy.reads_context())
def reference_image(retrieved: Retrieved, context: RunContext, query_index: Annotated[int, Field(ge=0)] = 0,
                    min_score: Annotated[float, Field(ge=-1, le=1)] = -1.0) -> ImageBatch:
    """The best retrieved image of a query, to use as ``init_images`` for image-to-image.

    Link the result to ``diffusion.generate``'s ``init_images`` and set its
    ``strength`` (lower keeps more of the reference). Fails when no hit scores
    at least ``min_score``.

    Args:
        retrieved: results of ``retrieve.query``.
        query_index: which query.
        min_score: the lowest acceptable cosine score.
    """
    from PIL import Image

    hits = [h for h in retrieved.hits[query_index] if h.score >= min_score] if query_index < len(retrieved.hits) else []
    if not hits:
        raise ValueError(f"no reference scores at least {min_score} for query {query_index}")
    # The index names the file; the run's path policy decides whether it may be read.
    with Image.open(context.readable_path(hits[0].path)) as image:
        return ImageBatch((image.convert("RGB"),), (hits[0].caption,))


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [mix, concat, reference_image]
