"""sfumato_safety: screening of prompts and generated images (built-in plugin).

``safety.screen_prompt`` refuses or flags prompts by explicit terms and by
similarity to a configurable list of concepts (sentence embeddings from the
shipped all-MiniLM-L6-v2); ``safety.screen_images`` runs a pluggable image
classifier and flags, blurs or blocks what it finds.
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    from . import images, prompts

    return [prompts.screen_prompt, images.screen_images]
