"""Training a small causal language model to plan layouts (prompt -> layout JSON).

The model is a small GPT-2 trained from scratch on (prompt, layout) pairs,
one JSON object a line (``sfumato zoo layouts`` writes them from the zoo's
scenes). Its tokenizer is built from the pairs: words whole, each punctuation
mark alone, so the constrained decoder's pieces tokenize as they do in
training. The loss counts the layout only (the prompt is context), and the
prompt is made noisy, a share of its words hidden as ``[UNK]`` and ``[UNK]``
inserted between others, so that the model learns to read a wording it never
saw (held-out wordings hold words outside its vocabulary, in new places). The learning rate warms up, then follows a cosine down to a
tenth. Training writes a checkpoint every ``save_every`` steps (the model
as safetensors, the optimizer state, the step) into ``out/checkpoint`` and
resumes from it; the finished model is saved to ``out``, a folder that
``layout.plan(planner="model", language_model=out)`` loads.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .language_model import training_text


@dataclass(frozen=True)
class TrainingConfig:
    """What one training run does."""

    pairs: Path
    out: Path
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-3
    width: int = 64
    layers: int = 4
    heads: int = 4
    context: int = 160
    save_every: int = 200
    seed: int = 0
    #: Share of prompt tokens replaced by ``[UNK]`` in training (robustness to unseen words).
    unk_rate: float = 0.1
    #: Chance of an ``[UNK]`` inserted before each prompt token (unseen words in unseen places).
    unk_insert: float = 0.1
    #: The noise starts at this share of the steps and reaches its full rate at twice it: a model that
    #: sees hidden words from the start does not learn to copy caption words (measured: no shape copied
    #: after 1,400 steps), one that first learns to copy then learns to read around unknown words.
    noise_from: float = 0.3
    warmup: int = 100
    #: How the model writes layouts (``language_model.FORMATS``); saved in its config as ``layout_format``.
    layout_format: str = "compact"
    #: Extra facts recorded in ``training.json`` (the command line, for instance).
    notes: tuple[tuple[str, str], ...] = ()


def learning_rate(config: TrainingConfig, step: int) -> float:
    """The rate at ``step`` (0-based): linear warm-up, then a cosine from the peak down to a tenth of it."""
    if step < config.warmup:
        return config.learning_rate * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _prompt_length(tokenizer: Any, text: str) -> int:
    """How many tokens of ``text`` are its prompt (everything up to and with ``layout:``)."""
    head = text[:text.index("\nlayout: ") + len("\nlayout: ")]
    return len(tokenizer(head, add_special_tokens=False)["input_ids"])


def read_pairs(path: Path, layout_format: str = "json") -> list[str]:
    """Training texts from a JSON-lines file of ``{"prompt": ..., "layout": {...}}``, in ``layout_format``."""
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            texts.append(training_text(item["prompt"], item["layout"], layout_format))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a (prompt, layout) pair: {error}") from None
    if not texts:
        raise ValueError(f"{path}: no pairs")
    return texts


def build_tokenizer(texts: list[str], folder: Path) -> Any:
    """A word-level tokenizer over ``texts`` (punctuation marks alone), saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation("isolated")])
    words: dict[str, None] = {}
    for text in texts:
        for piece, _ in splitter.pre_tokenize_str(text):
            words.setdefault(piece, None)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{word: index + 3 for index, word in enumerate(sorted(words))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = splitter
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="[EOS]")
    fast.save_pretrained(folder)
    return fast


def noise_scale(config: TrainingConfig, step: int) -> float:
    """How much of the prompt noise applies at ``step`` (0-based): none, then a linear ramp, then all."""
    start = config.noise_from * config.steps
    return min(1.0, max(0.0, (step - start) / max(1.0, start)))


def training_batch(tokenizer: Any, texts: list[str], rng: random.Random, config: TrainingConfig,
                   noise: float = 1.0) -> tuple[Any, Any, Any]:
    """``(input_ids, attention_mask, labels)`` for ``texts``: the loss on the layout only, the prompt made noisy.

    Before each prompt token (but ``layout:``) an ``[UNK]`` is inserted with
    probability ``config.unk_insert``, and the token itself becomes ``[UNK]``
    with probability ``config.unk_rate`` (both times ``noise``): a wording the model never saw has
    words it does not know, in places it does not expect. Labels are ``-100``
    on the prompt and the padding; rows are padded on the right.
    """
    import torch

    unk, pad = tokenizer.unk_token_id, tokenizer.pad_token_id
    rows: list[tuple[list[int], list[int]]] = []
    for text in texts:
        ids = list(tokenizer(text + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        head = _prompt_length(tokenizer, text)
        noisy: list[int] = []
        for token in ids[:head - 2]:  # never touch "layout:" itself, the cue to start
            if rng.random() < config.unk_insert * noise:
                noisy.append(unk)
            noisy.append(unk if rng.random() < config.unk_rate * noise else token)
        row = (noisy + ids[head - 2:])[:config.context]
        # The model shifts labels: the first layout token is learnt from "layout:".
        labels = ([-100] * (len(noisy) + 2) + ids[head:])[:config.context]
        rows.append((row, labels))
    width = max(len(row) for row, _ in rows)
    inputs = torch.tensor([row + [pad] * (width - len(row)) for row, _ in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row, _ in rows])
    labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])
    return inputs, mask, labels


def train(config: TrainingConfig, log: Callable[[int, float], None] = lambda step, loss: None) -> Path:
    """Train (or resume) and save the model into ``config.out``; returns that folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    texts = read_pairs(config.pairs, config.layout_format)
    checkpoint = config.out / "checkpoint"
    state_file = checkpoint / "trainer_state.json"
    torch.manual_seed(config.seed)
    history: list[list[float]] = []
    seconds = 0.0
    if state_file.exists():
        # Resume: the model, the tokenizer it was built with, the optimizer, the step and the history so far.
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        state = json.loads(state_file.read_text())
        step = int(state["step"])
        history, seconds = list(state.get("losses", [])), float(state.get("seconds", 0.0))
    else:
        checkpoint.mkdir(parents=True, exist_ok=True)
        tokenizer = build_tokenizer(texts, checkpoint)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=config.context,
                                           n_embd=config.width, n_layer=config.layers, n_head=config.heads,
                                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                           pad_token_id=tokenizer.pad_token_id, layout_format=config.layout_format,
                                           # No dropout: a resumed run then matches an unbroken one exactly.
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        step = 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    if (checkpoint / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    model.train()
    started = time.perf_counter()
    while step < config.steps:
        # The batch (and its hidden words) depends on the step alone, so a resumed run sees the same data.
        rng = random.Random(config.seed * 1_000_003 + step)
        chosen = [texts[rng.randrange(len(texts))] for _ in range(config.batch_size)]
        inputs, attention_mask, labels = training_batch(tokenizer, chosen, rng, config, noise_scale(config, step))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        loss = model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        log(step, loss.item())
        history.append([step, round(loss.item(), 5)])
        if step % config.save_every == 0 or step == config.steps:
            elapsed = seconds + time.perf_counter() - started
            _save_checkpoint(model, tokenizer, optimizer, {"step": step, "seconds": elapsed, "losses": history},
                             checkpoint)
    seconds += time.perf_counter() - started
    model.eval()
    model.save_pretrained(config.out)
    tokenizer.save_pretrained(config.out)
    every = max(1, len(history) // 60)
    record = {"steps": step, "seconds": round(seconds, 1), "pairs": str(config.pairs), "examples": len(texts),
              "parameters": sum(p.numel() for p in model.parameters()),
              "config": {"batch_size": config.batch_size, "learning_rate": config.learning_rate,
                         "width": config.width, "layers": config.layers, "heads": config.heads,
                         "context": config.context, "layout_format": config.layout_format, "unk_rate": config.unk_rate, "unk_insert": config.unk_insert, "noise_from": config.noise_from,
                         "warmup": config.warmup,
                         "seed": config.seed},
              # Every loss would bloat the file: a sample along the run, and the mean of the last 100.
              "losses": history[::every] + ([history[-1]] if history and history[-1] not in history[::every] else []),
              "final_loss_mean_100": round(sum(v for _, v in history[-100:]) / max(1, len(history[-100:])), 5),
              **dict(config.notes)}
    (config.out / "training.json").write_text(json.dumps(record, indent=2))
    return config.out


def _save_checkpoint(model: Any, tokenizer: Any, optimizer: Any, state: dict[str, Any], folder: Path) -> None:
    import torch

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    # Written last: a checkpoint counts only once everything else is on disk.
    (folder / "trainer_state.json").write_text(json.dumps(state))
