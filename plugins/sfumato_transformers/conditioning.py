"""Token-level encoders that make ``Conditioning`` for generators.

- CLIP text encoders: the last or penultimate hidden state, plus the pooled output.
- T5 encoders: the last hidden state (no pooled output; its mean is given).
- Sentence encoders (MiniLM and other BERT-likes): the mean-pooled, normalised
  embedding as a one-token sequence, as the tiny zoo diffusion model expects.
  An empty prompt encodes to the zero vector, the unconditional input those
  models are trained with (so an empty negative prompt means "no negative").

Prompt weights (from ``text.weights``) scale the token states of each phrase;
as in the AUTOMATIC1111 web UI, the result is rescaled so its mean matches the
unweighted one, which keeps the overall strength of the conditioning.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from sfumato import Conditioning, PromptWeights

CACHE_SIZE = 4096


def token_weights(offsets: Any, weights: PromptWeights | None) -> list[float]:
    """The weight of each token, from its character span in the weighted prompt."""
    if weights is None:
        return [1.0] * len(offsets)
    spans, position = [], 0
    for text, weight in weights.phrases:
        spans.append((position, position + len(text), weight))
        position += len(text)
    result = []
    for start, end in offsets:
        if start == end:  # special tokens and padding
            result.append(1.0)
            continue
        middle = (start + end) / 2
        result.append(next((w for s, e, w in spans if s <= middle < e), 1.0))
    return result


@dataclass
class TextEncoder:
    """A loaded tokenizer + encoder with a per-text cache of its outputs."""

    name: str
    family: str
    tokenizer: Any
    model: Any
    device: str
    hidden_layer: str = "last"
    _cache: "OrderedDict[tuple[Any, ...], tuple[Any, Any]]" = field(default_factory=OrderedDict)

    @property
    def width(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))

    def encode(self, texts: Sequence[str], weights: Sequence[PromptWeights | None], max_length: int,
               hidden_layer: str) -> Conditioning:
        """Encode a batch; texts already encoded with the same settings come from the cache."""
        import torch

        keys = [(text, w.phrases if w else None, max_length, hidden_layer) for text, w in zip(texts, weights)]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            states, pooled = self._run([texts[i] for i in missing], [weights[i] for i in missing],
                                       max_length, hidden_layer)
            for row, index in enumerate(missing):
                self._cache[keys[index]] = (states[row], pooled[row])
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        for key in keys:
            self._cache.move_to_end(key)
        states = torch.stack([self._cache[key][0] for key in keys])
        pooled = torch.stack([self._cache[key][1] for key in keys])
        return Conditioning(states=states, encoder=self.name, width=int(states.shape[-1]),
                            sequence_length=int(states.shape[1]), pooled=pooled, texts=tuple(texts))

    def _run(self, texts: Sequence[str], weights: Sequence[PromptWeights | None], max_length: int,
             hidden_layer: str) -> tuple[Any, Any]:
        import torch

        padding = "max_length" if self.family == "clip" else True
        batch = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length,
                               return_tensors="pt", return_offsets_mapping=True)
        offsets = batch.pop("offset_mapping").tolist()
        token_w = torch.tensor([token_weights(o, w) for o, w in zip(offsets, weights)], dtype=torch.float32)
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            if self.family == "clip":
                out = self.model(input_ids=batch["input_ids"], output_hidden_states=hidden_layer == "penultimate")
                states = out.hidden_states[-2] if hidden_layer == "penultimate" else out.last_hidden_state
                if hidden_layer == "penultimate":
                    # transformers 5 dropped the text_model wrapper; accept both layouts.
                    states = getattr(self.model, "text_model", self.model).final_layer_norm(states)
                pooled = out.pooler_output
            else:
                out = self.model(**batch)
                states = out.last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                if self.family == "sentence":
                    weighted_mask = mask * token_w.to(states.device, states.dtype).unsqueeze(-1)
                    pooled = (states * weighted_mask).sum(1) / weighted_mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                    # An empty prompt is the unconditional input: the zero vector
                    # that sentence-conditioned models are trained with.
                    empty = torch.tensor([not text.strip() for text in texts], device=pooled.device)
                    pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
                    return pooled.unsqueeze(1).cpu(), pooled.cpu()
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            states = states.float()
            if not torch.all(token_w == 1.0):
                original_mean = states.mean(dim=(1, 2), keepdim=True)
                states = states * token_w.to(states.device).unsqueeze(-1)
                states = states * (original_mean / states.mean(dim=(1, 2), keepdim=True).clamp(min=1e-6))
        return states.cpu(), pooled.float().cpu()


def load_text_encoder(name: str, path: Any, family: str, device: str, dtype: Any) -> TextEncoder:
    """Load tokenizer and encoder of ``family`` from a folder (or a hub id)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # sfumato shows its own progress

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if family == "clip":
        from transformers import CLIPTextModel

        model = CLIPTextModel.from_pretrained(str(path), dtype=dtype)
    elif family == "t5":
        from transformers import T5EncoderModel

        model = T5EncoderModel.from_pretrained(str(path), dtype=dtype)
    else:
        model = AutoModel.from_pretrained(str(path), dtype=dtype)
    model.eval().to(device)
    return TextEncoder(name, family, tokenizer, model, device)


@dataclass
class SDXLEncoders:
    """SDXL's CLIP text encoders (``text_encoder``/``text_encoder_2`` of a pipeline folder).

    The conditioning is both encoders' penultimate hidden states side by side
    plus the second encoder's pooled projection, as diffusers' SDXL pipeline
    makes it; the result records ``family="sdxl"``. The SDXL refiner has only
    the second encoder (CLIP-G): its states alone, and its pooled projection.
    """

    name: str
    tokenizers: tuple[Any, ...]
    models: tuple[Any, ...]
    device: str

    @property
    def width(self) -> int:
        return sum(int(model.config.hidden_size) for model in self.models)

    def encode(self, texts: Sequence[str], max_length: int, clip_skip: int = 0) -> Conditioning:
        import torch

        states, pooled = [], None
        with torch.inference_mode():
            for tokenizer, model in zip(self.tokenizers, self.models):
                length = min(max_length, int(tokenizer.model_max_length))
                ids = tokenizer(list(texts), padding="max_length", max_length=length, truncation=True,
                                return_tensors="pt").input_ids.to(self.device)
                out = model(input_ids=ids, output_hidden_states=True)
                # -2 is SDXL's default (the penultimate layer, no final norm); clip_skip goes further back.
                states.append(out.hidden_states[-(clip_skip + 2)].float())
                if getattr(out, "text_embeds", None) is not None:
                    pooled = out.text_embeds.float()
        joined = torch.cat(states, dim=-1).cpu()
        return Conditioning(states=joined, encoder=self.name, width=int(joined.shape[-1]),
                            sequence_length=int(joined.shape[1]), pooled=pooled.cpu(), texts=tuple(texts),
                            family="sdxl")


def load_sdxl_encoders(name: str, folder: Any, device: str, dtype: Any, checkpoint: Any = None) -> SDXLEncoders:
    """Both tokenizers and text encoders of an SDXL pipeline folder (the second alone in a refiner's).

    With ``checkpoint`` (a single-file SDXL checkpoint), the text encoders'
    weights come from the file (``conditioner.embedders.0`` CLIP-L,
    ``conditioner.embedders.1`` CLIP-G in OpenCLIP's layout, converted by
    diffusers), their configs and the tokenizers from ``folder``; a file
    without them uses the folder's.
    """
    from pathlib import Path

    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = Path(folder)

    def encoder(cls: Any, index: int, subfolder: str) -> Any:
        weights = _embedder_weights(checkpoint, index) if checkpoint is not None else {}
        if not weights:
            return cls.from_pretrained(folder / subfolder, dtype=dtype)
        from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

        return create_diffusers_clip_model_from_ldm(cls, weights, subfolder=subfolder, config=str(folder),
                                                    torch_dtype=dtype, local_files_only=True)

    base = (folder / "text_encoder").is_dir()  # a refiner folder has only text_encoder_2 (its file: embedders.0)
    tokenizers: tuple[Any, ...] = (AutoTokenizer.from_pretrained(folder / "tokenizer_2"),)
    models: tuple[Any, ...] = (encoder(CLIPTextModelWithProjection, 1 if base else 0, "text_encoder_2"),)
    if base:
        tokenizers = (AutoTokenizer.from_pretrained(folder / "tokenizer"), *tokenizers)
        models = (encoder(CLIPTextModel, 0, "text_encoder"), *models)
    for model in models:
        model.eval().to(device)
    return SDXLEncoders(name, tokenizers, models, device)


def _prefixed_weights(checkpoint: Any, prefix: str) -> dict[str, Any]:
    """The tensors of one text encoder of a single file (names starting with ``prefix``), alone.

    One at a time: diffusers tells CLIP-L from OpenCLIP-G by which keys are
    present, and a file's other encoder would otherwise be taken for it.
    """
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}  # noqa: SIM118


def _embedder_weights(checkpoint: Any, index: int) -> dict[str, Any]:
    """An SDXL file's text encoder ``conditioner.embedders.<index>.`` (0: CLIP-L, or a refiner's CLIP-G; 1: CLIP-G)."""
    return _prefixed_weights(checkpoint, f"conditioner.embedders.{index}.")


@dataclass
class FluxEncoders:
    """Flux's CLIP (pooled output) and T5 (token states) encoders, from a pipeline folder.

    The conditioning is T5's last hidden state as the states and CLIP's pooled
    output as ``pooled``, as diffusers' Flux pipeline makes it; it records
    ``family="flux"``.
    """

    name: str
    clip: tuple[Any, Any]
    t5: tuple[Any, Any]
    device: str

    def encode(self, texts: Sequence[str], max_length: int) -> Conditioning:
        import torch

        clip_tokenizer, clip_model = self.clip
        t5_tokenizer, t5_model = self.t5
        with torch.inference_mode():
            ids = clip_tokenizer(list(texts), padding="max_length", max_length=int(clip_tokenizer.model_max_length),
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            pooled = clip_model(input_ids=ids).pooler_output.float().cpu()
            length = min(max_length, int(t5_tokenizer.model_max_length))
            ids = t5_tokenizer(list(texts), padding="max_length", max_length=length, truncation=True,
                               return_tensors="pt").input_ids.to(self.device)
            states = t5_model(input_ids=ids).last_hidden_state.float().cpu()
        return Conditioning(states=states, encoder=self.name, width=int(states.shape[-1]),
                            sequence_length=int(states.shape[1]), pooled=pooled, texts=tuple(texts), family="flux")


def load_flux_encoders(name: str, folder: Any, device: str, dtype: Any) -> FluxEncoders:
    """CLIP (``text_encoder``) and T5 (``text_encoder_2``) of a Flux pipeline folder."""
    from pathlib import Path

    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = Path(folder)
    clip = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype).eval().to(device)
    t5 = T5EncoderModel.from_pretrained(folder / "text_encoder_2", dtype=dtype).eval().to(device)
    return FluxEncoders(name, (AutoTokenizer.from_pretrained(folder / "tokenizer"), clip),
                        (AutoTokenizer.from_pretrained(folder / "tokenizer_2"), t5), device)


@dataclass
class SD3Encoders:
    """SD3's CLIP-L, CLIP-G and T5 encoders (``text_encoder``, ``_2``, ``_3`` of a pipeline folder).

    As diffusers' SD3 pipeline does: both CLIPs' penultimate states side by
    side, zero-padded to T5's width, then T5's states after them in the
    sequence; the pooled input is both CLIPs' projections side by side. The
    result records ``family="sd3"``.
    """

    name: str
    encoders: tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]
    device: str

    def encode(self, texts: Sequence[str], max_length: int, clip_skip: int = 0) -> Conditioning:
        import torch

        clip_states, pooled = [], []
        with torch.inference_mode():
            for tokenizer, model in self.encoders[:2]:
                ids = tokenizer(list(texts), padding="max_length", max_length=int(tokenizer.model_max_length),
                                truncation=True, return_tensors="pt").input_ids.to(self.device)
                out = model(input_ids=ids, output_hidden_states=True)
                clip_states.append(out.hidden_states[-(clip_skip + 2)].float())
                pooled.append(out.text_embeds.float())
            tokenizer, t5 = self.encoders[2]
            ids = tokenizer(list(texts), padding="max_length", max_length=min(max_length, int(tokenizer.model_max_length)),
                            truncation=True, return_tensors="pt").input_ids.to(self.device)
            t5_states = t5(input_ids=ids).last_hidden_state.float()
            clip = torch.cat(clip_states, dim=-1)
            clip = torch.nn.functional.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
            states = torch.cat([clip, t5_states], dim=-2).cpu()
        return Conditioning(states=states, encoder=self.name, width=int(states.shape[-1]),
                            sequence_length=int(states.shape[1]), pooled=torch.cat(pooled, dim=-1).cpu(),
                            texts=tuple(texts), family="sd3")


def load_sd3_encoders(name: str, folder: Any, device: str, dtype: Any, checkpoint: Any = None) -> SD3Encoders:
    """The three tokenizers and text encoders of an SD3 pipeline folder.

    With ``checkpoint`` (a single-file SD3 checkpoint), each encoder the file
    carries (``text_encoders.clip_l``, ``clip_g``, ``t5xxl``, as the
    ``*_incl_clips_t5xxl`` files do) is read from it, converted by diffusers;
    the others, their configs and the tokenizers come from ``folder``.
    """
    from pathlib import Path

    from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = Path(folder)
    parts = []
    kinds = (("", CLIPTextModelWithProjection, "clip_l"), ("_2", CLIPTextModelWithProjection, "clip_g"),
             ("_3", T5EncoderModel, "t5xxl"))
    for suffix, cls, stored in kinds:
        weights = _prefixed_weights(checkpoint, f"text_encoders.{stored}.") if checkpoint is not None else {}
        if weights:
            from diffusers.loaders import single_file_utils

            create = single_file_utils.create_diffusers_t5_model_from_checkpoint if stored == "t5xxl" \
                else single_file_utils.create_diffusers_clip_model_from_ldm
            model = create(cls, weights, subfolder=f"text_encoder{suffix}", config=str(folder), torch_dtype=dtype,
                           local_files_only=True)
            model.tie_weights()  # T5's token embedding is stored once, as "shared"
        else:
            model = cls.from_pretrained(folder / f"text_encoder{suffix}", dtype=dtype)
        parts.append((AutoTokenizer.from_pretrained(folder / f"tokenizer{suffix}"), model.eval().to(device)))
    return SD3Encoders(name, (parts[0], parts[1], parts[2]), device)
