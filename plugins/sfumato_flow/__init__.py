"""sfumato_flow: branching nodes whose untaken branches never run (built-in plugin).

``flow.if`` and ``flow.switch`` take their branches as lazy inputs
(:func:`sfumato.lazy_inputs`): the scheduler runs the condition first, then only
the branch chosen. ``flow.compare`` makes a condition from two numbers, ``flow.number``
reads one out of a record (a score), ``flow.increment`` counts (the next seed of a retry).
``flow.map`` runs a graph once per item of a list (batched where a node can be);
``flow.loop`` repeats a graph until it says it is done, at most a given number of
times (the engine unrolls it when planning, into lazily chosen iterations).
Registered under the ``sfumato`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

import sfumato

from . import nodes


@sfumato.hookimpl
def sfumato_node_types() -> list[Any]:
    return [nodes.if_, nodes.switch, nodes.compare, nodes.number, nodes.increment, nodes.loop, nodes.map_]
