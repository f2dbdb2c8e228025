"""sfumato_server: an HTTP API with a persistent job queue, and a web page (built-in plugin).

``sfumato serve [--host 127.0.0.1] [--port 8188] [--token T] [--data DIR] [--graphs DIR]
[--allowed-host NAME]... [--allow-read DIR]... [--max-sweep-runs N] [--max-body-mb MB]
[--webhook-allow HOST[:PORT]]... [--executor ray [--address A] [--workers N]]``

Modules: ``guard`` (which requests get in: host, origin, content type, token,
body size), ``jobspec`` (untrusted JSON to values and sweep axes), ``app``
(the routes, each graph as a function), ``store`` (the SQLite queue),
``worker`` (runs jobs, here or on an executor; restarts itself), ``webhooks``
(calls a job's URL when it ends), ``events`` (Server-Sent Events fan-out),
``cli`` (``sfumato serve``).
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
