"""``sfumato serve``: the API, the job queue and the web page."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any


def add_parsers(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="serve the HTTP API, the job queue and the web page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--token", default=None, help="require this token on every API request")
    serve.add_argument("--data", default="sfumato-data", help="queue database and outputs (default: ./sfumato-data)")
    serve.add_argument("--graphs", default="graphs", help="folder of graphs offered by name (default: ./graphs)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--max-queued", type=int, default=1000)
    serve.set_defaults(handler=serve_command)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import ServerConfig, create_app

    if not is_loopback(args.host) and not args.token:
        print(f"error: binding to {args.host} exposes the server beyond this machine; give --token TOKEN")
        return 2
    config = ServerConfig(data=Path(args.data).resolve(), graphs=Path(args.graphs).resolve(), token=args.token,
                          device=args.device, dtype=args.dtype, max_queued=args.max_queued)
    app = create_app(config)
    if app.state.recovered:
        print(f"recovered {len(app.state.recovered)} interrupted job(s): {app.state.recovered}")
    print(f"sfumato serving on http://{args.host}:{args.port}/  (data in {config.data})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
