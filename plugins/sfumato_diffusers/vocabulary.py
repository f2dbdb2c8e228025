"""A model's vocabulary: the words its ``sfumato.json`` says it was trained on.

A small model trained on a few subjects (the zoo's shapes) draws one of them
for any prompt, so "a cat astronaut" would silently come out as a circle. A
model that declares ``"vocabulary": {"shapes": [...], "colours": [...]}``
refuses a prompt that uses none of its words, and says which ones it knows.
Models without the key (Stable Diffusion folders) accept every prompt.
"""

from __future__ import annotations

import re
from typing import Any, Iterable


def check_prompts_in_vocabulary(model: str, info: dict[str, Any], prompts: Iterable[str]) -> None:
    """Raise ``ValueError`` for a non-empty prompt that names no word of the model's vocabulary."""
    vocabulary = info.get("vocabulary")
    if not isinstance(vocabulary, dict) or not vocabulary:
        return
    known = {str(word).lower() for words in vocabulary.values() for word in words}
    for prompt in prompts:
        words = set(re.findall(r"[a-z]+", prompt.lower()))
        if words and not words & known:  # an empty prompt is the unconditional image
            kinds = "; ".join(f"{kind}: {', '.join(words)}" for kind, words in vocabulary.items())
            raise ValueError(
                f"the prompt {prompt!r} is outside the vocabulary of model {model!r}, which only knows "
                f"{kinds}; it would draw an unrelated picture. Describe one of those, or use a model "
                f"trained on your subject (--set model=FOLDER)")
