"""sfumato_server: an HTTP API with a persistent job queue, and a web page (built-in plugin).

``sfumato serve [--host 127.0.0.1] [--port 8188] [--token T] [--data DIR]``
"""

from __future__ import annotations

from typing import Any

import sfumato


@sfumato.hookimpl
def sfumato_cli_commands(subparsers: Any) -> None:
    from . import cli

    cli.add_parsers(subparsers)
