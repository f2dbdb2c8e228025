"""The language-model planner: a local Hugging Face causal LM writes the layout JSON, constrained to parse.

The model never writes free JSON. The decoder writes the structure itself
(``{"background": "``, ``", "objects": [``, ...) and asks the model only to
choose, at each open slot, among the continuations that keep the JSON valid
and inside the ``Layout`` schema: the background among colour names; whether
another object follows; each caption word among the prompt's own words (as
LLM-grounded planners copy phrases from the prompt), or the caption's end;
each box coordinate among a grid of values that keep ``x0 < x1`` and
``y0 < y1``. A choice is the candidate with the highest log-likelihood under
the model (summed over its tokens). So any causal LM, even a random one,
yields a layout that parses; a trained one yields a good layout.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .layout import COLOUR_RGB, Layout

#: Box coordinates the decoder may write (a 0.05 grid).
GRID: tuple[str, ...] = tuple(f"{step / 20:.2f}" for step in range(21))


def prompt_text(prompt: str) -> str:
    """The text the model continues: the training pairs use exactly this format."""
    return f"prompt: {prompt.strip()}\nlayout: "


def snap_box(box: Any) -> tuple[str, str, str, str]:
    """A box's coordinates on the decoder's :data:`GRID`, as it writes them (``x0 < x1``, ``y0 < y1`` kept)."""
    x0, y0, x1, y1 = (min(20, max(0, round(float(v) * 20))) for v in box)
    # Snapping can close a thin box; widen it by one grid step, inside the canvas.
    if x1 <= x0:
        x0, x1 = (x0, x0 + 1) if x0 < 20 else (19, 20)
    if y1 <= y0:
        y0, y1 = (y0, y0 + 1) if y0 < 20 else (19, 20)
    return GRID[x0], GRID[y0], GRID[x1], GRID[y1]


#: How a planner writes a layout. ``json``: the layout JSON itself (what a general LM knows how to write).
#: ``compact``: ``background ; caption : x0 y0 x1 y1 ; ... .`` with coordinates in grid steps (0..20), four
#: times fewer tokens, which a tiny model trained from scratch learns faster; the decoder still returns JSON.
FORMATS: tuple[str, ...] = ("json", "compact")


def model_format(model: Any) -> str:
    """The layout format a model was trained on (``layout_format`` in its config; ``json`` when it names none)."""
    value = getattr(model.config, "layout_format", "json")
    return value if value in FORMATS else "json"


def training_text(prompt: str, layout: dict[str, Any], layout_format: str = "json") -> str:
    """One training example: the prompt, then the layout as the decoder writes it (boxes on its grid)."""
    if layout_format == "compact":
        objects = " ; ".join(obj["caption"] + " : " + " ".join(str(GRID.index(v)) for v in snap_box(obj["box"]))
                             for obj in layout["objects"])
        return prompt_text(prompt) + layout["background"] + " ; " + objects + " ."
    objects = ", ".join(
        '{"caption": "' + obj["caption"] + '", "box": [' + ", ".join(snap_box(obj["box"])) + "]}"
        for obj in layout["objects"])
    return prompt_text(prompt) + '{"background": "' + layout["background"] + '", "objects": [' + objects + "]}"


@dataclass
class ChoiceScorer:
    """Scores candidate continuations of a text by the log-likelihood a causal LM gives them."""

    model: Any
    tokenizer: Any

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _context_length(self) -> int:
        config = self.model.config
        for name in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def choose(self, text: str, candidates: list[str]) -> str:
        """The candidate the model finds most likely after ``text`` (ties: the first)."""
        import torch

        if len(candidates) == 1:
            return candidates[0]
        endings = [self._ids(candidate) for candidate in candidates]
        # A model sees at most its context length: keep the end of the text (the open slot's surroundings).
        limit = self._context_length() - max(len(ending) for ending in endings)
        prefix = self._ids(text)[-max(limit, 1):]
        rows = [prefix + ending for ending in endings]
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.model.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=self.model.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
        scores = []
        for index, row in enumerate(rows):
            # Tokens of the candidate are predicted from position len(prefix)-1 on.
            start = max(len(prefix) - 1, 0)
            scores.append(float(log_probs[index, start:len(row) - 1].sum()))
        return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]


def prompt_words(prompt: str) -> list[str]:
    """The words a caption may use: the prompt's own, in order, once each, and each plural's singular.

    A caption names one object (``red circle``) where the prompt counts
    several (``two red circles``), so ``circles`` offers ``circle`` too
    (``-s`` and ``-es`` dropped; a model gives a non-word no weight).
    """
    seen: dict[str, None] = {}
    for word in re.findall(r"[a-z0-9]+", prompt.lower()):
        seen.setdefault(word, None)
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            seen.setdefault(word[:-1], None)
            if word.endswith("es"):
                seen.setdefault(word[:-2], None)
    return list(seen)


def plan_with_model(model: Any, tokenizer: Any, prompt: str, *, max_objects: int = 6, max_caption_words: int = 3,
                    colours: tuple[str, ...] = tuple(COLOUR_RGB)) -> Layout:
    """Plan ``prompt`` with a causal LM under JSON-constrained decoding; the result always parses.

    The model writes in the format it was trained on (:func:`model_format`);
    either way the decoder assembles the layout JSON from its choices.
    """
    scorer = ChoiceScorer(model, tokenizer)
    words = prompt_words(prompt) or ["object"]
    if model_format(model) == "compact":
        return _plan_compact(scorer, prompt, words, max_objects, max_caption_words, colours)
    text = prompt_text(prompt) + '{"background": "'
    text += scorer.choose(text, [f'{colour}"' for colour in colours])
    text += ', "objects": ['
    for index in range(max_objects):
        if index and scorer.choose(text, [", ", "]"]) == "]":
            break
        if index:
            text += ", "
        text += '{"caption": "'
        for position in range(max_caption_words):
            options = ([] if position == 0 else ['"']) + [(" " if position else "") + word for word in words]
            picked = scorer.choose(text, options)
            if picked == '"':
                break
            text += picked
        text += '", "box": ['
        x0 = scorer.choose(text, list(GRID[:-1]))
        text += x0 + ", "
        y0 = scorer.choose(text, list(GRID[:-1]))
        text += y0 + ", "
        text += scorer.choose(text, [v for v in GRID if float(v) > float(x0)]) + ", "
        text += scorer.choose(text, [v for v in GRID if float(v) > float(y0)]) + "]}"
    text += "]}"
    document = json.loads(text[len(prompt_text(prompt)):])
    return Layout.from_dict(document, prompt=prompt, planner="model")


def _plan_compact(scorer: ChoiceScorer, prompt: str, words: list[str], max_objects: int, max_caption_words: int,
                  colours: tuple[str, ...]) -> Layout:
    """Constrained decoding of the compact format (``background ; caption : x0 y0 x1 y1 ; ... .``)."""
    steps = [str(step) for step in range(len(GRID))]
    text = prompt_text(prompt)
    background = scorer.choose(text, list(colours))
    text += background
    objects = []
    for index in range(max_objects):
        if index and scorer.choose(text, [" ;", " ."]) == " .":
            break
        text += " ;"
        caption: list[str] = []
        for position in range(max_caption_words):
            picked = scorer.choose(text, ([] if position == 0 else [" :"]) + [" " + word for word in words])
            if picked == " :":
                break
            caption.append(picked.strip())
            text += picked
        text += " :"
        x0 = int(scorer.choose(text, [" " + v for v in steps[:-1]]))
        text += f" {x0}"
        y0 = int(scorer.choose(text, [" " + v for v in steps[:-1]]))
        text += f" {y0}"
        x1 = int(scorer.choose(text, [" " + v for v in steps[x0 + 1:]]))
        text += f" {x1}"
        y1 = int(scorer.choose(text, [" " + v for v in steps[y0 + 1:]]))
        text += f" {y1}"
        objects.append({"caption": " ".join(caption), "box": [float(GRID[x0]), float(GRID[y0]), float(GRID[x1]),
                                                              float(GRID[y1])]})
    return Layout.from_dict({"background": background, "objects": objects}, prompt=prompt, planner="model")
