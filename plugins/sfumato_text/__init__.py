"""sfumato_text: input normalization nodes (built-in plugin).

Registered under the ``sfumato`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

import sfumato

from . import nodes


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [
        nodes.normalize,
        nodes.template,
        nodes.split_prompts,
        nodes.join_texts,
        nodes.parse_weights,
        nodes.negative_prompt,
        nodes.text_value,
    ]
