"""Training a small causal language model to plan layouts (prompt -> layout JSON).

The model is a small GPT-2 trained from scratch on (prompt, layout) pairs,
one JSON object a line (``sfumato zoo layouts`` writes them from the zoo's
scenes). Its tokenizer is built from the pairs: words whole, each punctuation
mark alone, so the constrained decoder's pieces tokenize as they do in
training. Training writes a checkpoint every ``save_every`` steps (the model
as safetensors, the optimizer state, the step) into ``out/checkpoint`` and
resumes from it; the finished model is saved to ``out``, a folder that
``layout.plan(planner="model", language_model=out)`` loads.
"""

from __future__ import annotations

import json
import random
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
    width: int = 128
    layers: int = 4
    heads: int = 4
    context: int = 160
    save_every: int = 200
    seed: int = 0


def read_pairs(path: Path) -> list[str]:
    """Training texts from a JSON-lines file of ``{"prompt": ..., "layout": {...}}``."""
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            texts.append(training_text(item["prompt"], item["layout"]))
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


def train(config: TrainingConfig, log: Callable[[int, float], None] = lambda step, loss: None) -> Path:
    """Train (or resume) and save the model into ``config.out``; returns that folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    texts = read_pairs(config.pairs)
    checkpoint = config.out / "checkpoint"
    state_file = checkpoint / "trainer_state.json"
    torch.manual_seed(config.seed)
    if state_file.exists():
        # Resume: the model, the tokenizer it was built with, the optimizer and the step.
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        step = int(json.loads(state_file.read_text())["step"])
    else:
        checkpoint.mkdir(parents=True, exist_ok=True)
        tokenizer = build_tokenizer(texts, checkpoint)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=config.context,
                                           n_embd=config.width, n_layer=config.layers, n_head=config.heads,
                                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                           pad_token_id=tokenizer.pad_token_id,
                                           # No dropout: a resumed run then matches an unbroken one exactly.
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        step = 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    if (checkpoint / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    model.train()
    while step < config.steps:
        # The batch depends on the step alone, so a resumed run sees the same data as an unbroken one.
        rng = random.Random(config.seed * 1_000_003 + step)
        batch = [texts[rng.randrange(len(texts))] + tokenizer.eos_token for _ in range(config.batch_size)]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=config.context, return_tensors="pt")
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        loss = model(**encoded, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        log(step, loss.item())
        if step % config.save_every == 0 or step == config.steps:
            _save_checkpoint(model, tokenizer, optimizer, step, checkpoint)
    model.eval()
    model.save_pretrained(config.out)
    tokenizer.save_pretrained(config.out)
    (config.out / "training.json").write_text(json.dumps({"steps": step, "pairs": str(config.pairs),
                                                          "examples": len(texts)}, indent=2))
    return config.out


def _save_checkpoint(model: Any, tokenizer: Any, optimizer: Any, step: int, folder: Path) -> None:
    import torch

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    # Written last: a checkpoint counts only once everything else is on disk.
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
