"""Encoding nodes: sentence embeddings, generator conditioning, prompt expansion."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from sfumato import Conditioning, Embedding, Field, PromptWeights, RunContext, ValidationContext, node

from .conditioning import (
    FluxEncoders,
    SD3Encoders,
    SDXLEncoders,
    TextEncoder,
    load_flux_encoders,
    load_sd3_encoders,
    load_sdxl_encoders,
    load_text_encoder,
)
from .modelinfo import encoder_family, hidden_width, local_hub_snapshot, read_config
from .sentence import DEFAULT_SENTENCE_MODEL

Family = Literal["auto", "sentence", "clip", "t5"]


def get_encoder(context: RunContext, model: str, family: str = "auto") -> TextEncoder:
    """The encoder for ``model``, loaded once per process through the model manager."""
    from sfumato import torch_dtype

    preparing = time.perf_counter()  # finding the model and the device (torch's import) is part of a load
    path = context.models.resolve(model)
    if isinstance(path, str):  # a hub id: only the hub cache's copy, never a download
        path = local_hub_snapshot(path)
    if family == "auto":
        family = encoder_family(read_config(path))
    return context.models.get(
        f"{model}#{family}", context.device, context.dtype,
        lambda: load_text_encoder(model, path, family, context.device, torch_dtype(context.dtype)),
        preparing_since=preparing,
    )


def _describe_embedding(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    width = hidden_width(read_config(context.model_folder(inputs["model"])))
    return {"embedding": {"model": inputs["model"], **({"dimension": width} if width else {})}}


@node("encode.sentence", category="encode", output="embedding",
      describe_outputs=_describe_embedding)
def encode_sentence(
    texts: list[str],
    context: RunContext,
    model: str = DEFAULT_SENTENCE_MODEL,
    weights: PromptWeights | None = None,
) -> Embedding:
    """Embed texts as unit vectors (mean pooling + L2 norm, as sentence-transformers does).

    A list of texts is encoded as one batch; each text's vector is cached per
    model, so a sweep over seeds never re-encodes the same prompt.

    Args:
        texts: the texts (a single text links here too).
        model: a model name (``all-MiniLM-L6-v2``), a local folder or a hub id.
        weights: optional phrase weights from ``text.weights`` (single text only).
    """
    encoder = get_encoder(context, model, "sentence")
    weight_list = [weights] * len(texts) if weights is not None and len(texts) == 1 else [None] * len(texts)
    result = encoder.encode(texts, weight_list, max_length=256, hidden_layer="last")
    return Embedding(vectors=result.pooled.numpy(), model=model, dimension=int(result.pooled.shape[1]),
                     texts=tuple(texts))


def _describe_conditioning(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    config = read_config(context.model_folder(inputs["model"]))
    width = hidden_width(config)
    family = inputs["encoder"] if inputs["encoder"] != "auto" else encoder_family(config)
    # One encoder's token states are what SD 1.x/2.x (and the zoo models) take: family "sd".
    described: dict[str, Any] = {"encoder": inputs["model"], "family": "sd"}
    if width:
        described["width"] = width
    if config is not None:
        described["encoder_family"] = family
    return {"conditioning": described}


def encode_text_batch(calls: list[dict[str, Any]]) -> list[Conditioning]:
    """``encode.text`` for several runs: one encoder call per model and settings."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, call in enumerate(calls):
        key = (call["model"], call["encoder"], call["hidden_layer"], call["max_length"])
        groups.setdefault(key, []).append(index)
    results: list[Conditioning | None] = [None] * len(calls)
    for (model, family, hidden_layer, max_length), indices in groups.items():
        encoder = get_encoder(calls[indices[0]]["context"], model, family)
        texts, weights, counts = [], [], []
        for index in indices:
            call = calls[index]
            single_weight = call.get("weights") if len(call["texts"]) == 1 else None
            texts += list(call["texts"])
            weights += [single_weight] * len(call["texts"])
            counts.append(len(call["texts"]))
        merged = encoder.encode(texts, weights, max_length, hidden_layer)
        offset = 0
        for index, count in zip(indices, counts):
            part = slice(offset, offset + count)
            results[index] = Conditioning(merged.states[part], merged.encoder, merged.width, merged.sequence_length,
                                          None if merged.pooled is None else merged.pooled[part],
                                          tuple(texts[part]))
            offset += count
    return results  # type: ignore[return-value]


@node("encode.text", category="encode", output="conditioning",
      describe_outputs=_describe_conditioning, batch=lambda calls: encode_text_batch(calls))
def encode_text(
    texts: list[str],
    context: RunContext,
    model: str = DEFAULT_SENTENCE_MODEL,
    encoder: Family = "auto",
    hidden_layer: Literal["last", "penultimate"] = "last",
    max_length: Annotated[int, Field(ge=1, le=4096)] = 77,
    weights: PromptWeights | None = None,
) -> Conditioning:
    """Encode prompts into token-level conditioning for a generator.

    CLIP gives the last or penultimate hidden state plus its pooled output; T5
    its last hidden state; a sentence encoder (the default) its pooled
    embedding as a one-token sequence, which is what the tiny zoo models use.
    The result records the encoder and its width, so a generator trained on
    another encoder rejects it when the graph is validated.

    Args:
        texts: the prompts (a single text links here too).
        model: a model name, a local folder or a hub id.
        encoder: the encoder family; ``auto`` reads it from the model config.
        hidden_layer: CLIP only: ``penultimate`` is what SD 2.x and many fine-tunes expect.
        max_length: tokens per prompt (CLIP pads to this length).
        weights: phrase weights from ``text.weights`` (applied to a single prompt).
    """
    text_encoder = get_encoder(context, model, encoder)
    weight_list = [weights] * len(texts) if weights is not None and len(texts) == 1 else [None] * len(texts)
    return text_encoder.encode(texts, weight_list, max_length, hidden_layer)


@node("text.expand", category="text", output="text")
def expand_prompt(
    prompt: str,
    model: str,
    context: RunContext,
    instruction: str = "Describe this picture in more detail: {prompt}\n",
    seed: int = 0,
    max_new_tokens: Annotated[int, Field(ge=1, le=1024)] = 40,
    temperature: Annotated[float, Field(ge=0, le=5)] = 0.7,
    keep_prompt: bool = True,
) -> str:
    """Rewrite or enrich a prompt with a causal language model.

    Deterministic for a given seed (sampling runs on its own random generator);
    ``temperature=0`` decodes greedily.

    Args:
        prompt: the prompt to expand.
        model: any transformers causal LM: a local folder or a hub id.
        instruction: the text given to the model; ``{prompt}`` is replaced.
        seed: the sampling seed.
        max_new_tokens: the most tokens to add.
        temperature: sampling temperature; 0 is greedy.
        keep_prompt: start the result with the original prompt.
    """
    import torch

    from sfumato import torch_dtype

    preparing = time.perf_counter()
    path = context.models.resolve(model)

    def load() -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(context.dtype))
        return tokenizer, lm.eval().to(context.device)

    tokenizer, lm = context.models.get(f"{model}#causal-lm", context.device, context.dtype, load,
                                       preparing_since=preparing)
    text = instruction.replace("{prompt}", prompt)
    inputs = tokenizer(text, return_tensors="pt").to(context.device)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        output = lm.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None, top_k=None, top_p=None,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    added = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    added = " ".join(added.split())
    if not keep_prompt:
        return added or prompt
    return f"{prompt}, {added}" if added else prompt


_TWO_ENCODERS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def _pipeline_encoders(context: RunContext, model: str, family: str, parts: tuple[str, ...],
                       load: Callable[..., Any]) -> Any:
    """The text encoders of the pipeline folder ``model`` (``family`` names it in messages and the
    model key), checked for ``parts`` and loaded once per process through the model manager.

    ``model`` may also be a single-file checkpoint of the model library (see :func:`library_folder_of_file`).
    """
    from sfumato import torch_dtype

    preparing = time.perf_counter()
    path = context.models.resolve(model)
    if isinstance(path, str):
        path = local_hub_snapshot(path)
    key = family.split()[-1].lower()
    checkpoint = None
    if path.is_file():  # a single-file checkpoint of the model library: its family's folder has the encoders
        checkpoint, path = path, library_folder_of_file(context.models.sources, model, path, key)
    missing = [part for part in parts if not (path / part).is_dir()]
    if missing:
        raise ValueError(f"model {model!r} at {path} is not {family} pipeline folder: missing {', '.join(missing)}/")
    # SDXL files carry their encoders (maybe fine-tuned), SD3 files may: those are read from the file.
    file = (checkpoint,) if checkpoint is not None and key in ("sdxl", "sd3") else ()
    return context.models.get(f"{model}#{key}-encoders", context.device, context.dtype,
                              lambda: load(model, path, context.device, torch_dtype(context.dtype), *file),
                              preparing_since=preparing)


def library_folder_of_file(sources: dict[str, Any], model: str, file: Path, family: str) -> Path:
    """The model library's diffusers ``family`` folder, for the single-file checkpoint ``file`` of that family.

    A single file has no tokenizers (and a Flux file no text encoders): they
    come from the library's folder of the file's family. SDXL files carry both
    text encoders, which may be fine-tuned, and SD3 files may carry theirs:
    those are read from the file (:func:`load_sdxl_encoders`,
    :func:`load_sd3_encoders`), the folder giving their configs and
    tokenizers. Raises ``ValueError`` saying what to do.
    """
    resolved = file.resolve()
    listed = next((source for source in sources.values() if source.kind in ("checkpoint", "transformer", "refiner")
                   and source.path().resolve() == resolved), None)
    if listed is None:
        raise ValueError(f"model {model!r} is a single file outside the model library: encode.{family} takes a "
                         f"diffusers {family} pipeline folder, or a single {family} checkpoint of the model library "
                         "(SFUMATO_MODELS), whose tokenizers (and encoders' configs) come from the library's "
                         f"{family} folder")
    if listed.family != family:
        raise ValueError(f"model {model!r} is a single-file {listed.family or 'unknown'} {listed.kind}, not a "
                         f"{family} checkpoint that encode.{family} encodes for")
    kind = "refiner" if listed.kind == "refiner" else "pipeline"  # an SDXL refiner file: the refiner folder's
    folder = next((source.path() for source in sources.values()
                   if source.kind == kind and source.family == family and source.path().is_dir()), None)
    if folder is None:
        what = f"{family} refiner" if kind == "refiner" else family
        raise ValueError(f"model {model!r} is a single-file {what} checkpoint; its tokenizers (and encoders' "
                         f"configs) come from a diffusers {what} folder in the model library, and there is none: "
                         "add one to a folder in SFUMATO_MODELS")
    return folder


def get_sdxl_encoders(context: RunContext, model: str) -> SDXLEncoders:
    """The text encoders of the SDXL folder ``model`` (two; a refiner's one), loaded once per process."""
    return _pipeline_encoders(context, model, "an SDXL", ("text_encoder_2", "tokenizer_2"), load_sdxl_encoders)


def _describe_sdxl(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
    folder = context.model_folder(inputs["model"]) if inputs.get("model") else None
    if folder is None:
        return {"conditioning": {"family": "sdxl"}}
    # A base folder has both encoders; a refiner folder only text_encoder_2 (CLIP-G).
    parts = ("text_encoder", "text_encoder_2") if (folder / "text_encoder").is_dir() else ("text_encoder_2",)
    widths = [hidden_width(read_config(folder / part)) for part in parts]
    if None in widths:
        context.problem(f"model {inputs['model']!r} has no text_encoder/ and text_encoder_2/ configs: "
                        "encode.sdxl takes an SDXL pipeline folder (base, or a refiner's text_encoder_2/)", "model")
        return {}
    return {"conditioning": {"family": "sdxl", "encoder": inputs["model"], "width": sum(widths)}}


@node("encode.sdxl", category="encode", output="conditioning", describe_outputs=_describe_sdxl)
def encode_sdxl(
    texts: list[str],
    model: str,
    context: RunContext,
    max_length: Annotated[int, Field(ge=1, le=77)] = 77,
    clip_skip: Annotated[int, Field(ge=0, le=10)] = 0,
) -> Conditioning:
    """Encode prompts for an SDXL model with its two CLIP text encoders (a refiner: its one).

    Gives both encoders' penultimate hidden states side by side and the second
    encoder's pooled projection, as diffusers' SDXL pipeline does; for the
    SDXL refiner (a folder with ``text_encoder_2/`` only) that encoder's
    states and pooled projection, for ``sdxl.refine``. The
    conditioning records family ``sdxl``, so an SD 1.x/2.x generator refuses
    it (and an SDXL generator refuses ``encode.text``'s) when the graph is validated.

    Args:
        texts: the prompts (a single text links here too).
        model: an SDXL pipeline folder (``text_encoder/``, ``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``;
            a refiner's has ``text_encoder_2/`` and ``tokenizer_2/`` only), or a single-file SDXL checkpoint of
            the model library (its own encoders; tokenizers from the library's SDXL folder).
        max_length: tokens per prompt (capped by each tokenizer's own limit).
        clip_skip: layers to skip before the penultimate one (0: SDXL's default).
    """
    return get_sdxl_encoders(context, model).encode(texts, max_length, clip_skip)


def get_flux_encoders(context: RunContext, model: str) -> FluxEncoders:
    """CLIP and T5 of the Flux folder ``model``, loaded once per process."""
    return _pipeline_encoders(context, model, "a Flux", _TWO_ENCODERS, load_flux_encoders)


def _describe_by_encoder(family: str, encoder: str) -> Callable[..., dict[str, dict[str, Any]]]:
    """A ``describe_outputs`` callback: conditioning of ``family``, as wide as the folder's ``encoder``."""

    def describe(inputs: dict[str, Any], context: ValidationContext) -> dict[str, dict[str, Any]]:
        folder = context.model_folder(inputs["model"]) if inputs.get("model") else None
        width = hidden_width(read_config(folder / encoder)) if folder is not None else None
        return {"conditioning": {"family": family, **({"width": width} if width else {})}}

    return describe


_describe_flux = _describe_by_encoder("flux", "text_encoder_2")


@node("encode.flux", category="encode", output="conditioning", describe_outputs=_describe_flux)
def encode_flux(
    texts: list[str],
    model: str,
    context: RunContext,
    max_length: Annotated[int, Field(ge=1, le=512)] = 512,
) -> Conditioning:
    """Encode prompts for a Flux model: T5 token states plus CLIP's pooled output.

    The conditioning records family ``flux``, so only a Flux generator takes it.

    Args:
        texts: the prompts (a single text links here too).
        model: a Flux pipeline folder (``text_encoder/`` CLIP, ``text_encoder_2/`` T5, and their tokenizers), or a
            single-file Flux checkpoint of the model library (encoded with the library's Flux folder).
        max_length: T5 tokens per prompt (512 for FLUX.1-dev, 256 for schnell; capped by the tokenizer).
    """
    return get_flux_encoders(context, model).encode(texts, max_length)


def get_sd3_encoders(context: RunContext, model: str) -> SD3Encoders:
    """CLIP-L, CLIP-G and T5 of the SD3 folder ``model``, loaded once per process."""
    parts = tuple(f"{kind}{suffix}" for kind in ("text_encoder", "tokenizer") for suffix in ("", "_2", "_3"))
    return _pipeline_encoders(context, model, "an SD3", parts, load_sd3_encoders)


_describe_sd3 = _describe_by_encoder("sd3", "text_encoder_3")


@node("encode.sd3", category="encode", output="conditioning", describe_outputs=_describe_sd3)
def encode_sd3(
    texts: list[str],
    model: str,
    context: RunContext,
    max_length: Annotated[int, Field(ge=1, le=512)] = 256,
    clip_skip: Annotated[int, Field(ge=0, le=10)] = 0,
) -> Conditioning:
    """Encode prompts for an SD3/3.5 model with its CLIP-L, CLIP-G and T5 encoders.

    The conditioning records family ``sd3``, so only an SD3 generator takes it.

    Args:
        texts: the prompts (a single text links here too).
        model: an SD3 pipeline folder (``text_encoder/``, ``text_encoder_2/``, ``text_encoder_3/`` and tokenizers),
            or a single-file SD3 checkpoint of the model library (the encoders it carries, the others and the
            tokenizers from the library's SD3 folder).
        max_length: T5 tokens per prompt (capped by the tokenizer).
        clip_skip: CLIP layers to skip before the penultimate one.
    """
    return get_sd3_encoders(context, model).encode(texts, max_length, clip_skip)
