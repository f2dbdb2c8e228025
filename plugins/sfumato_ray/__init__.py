"""sfumato_ray: run sweeps on a Ray cluster (built-in plugin; Ray is in the default install).

``sfumato run GRAPH --executor ray [--address auto|ray://host:10001] [--workers N] --sweep ...``
``sfumato serve --executor ray [--address ...]``: the server's queued jobs run on the cluster's actors,
which stay up (models loaded) between jobs.
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_executors() -> dict[str, Any]:
    def make_ray_executor(**options: Any) -> Any:
        from .executor import RayExecutor

        return RayExecutor(**options)

    return {"ray": make_ray_executor}
