"""``sfumato serve``: the API, the job queue and the web page."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any


def add_parsers(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="serve the HTTP API, the job queue and the web page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--token", default=None, help="require this token on every API request")
    serve.add_argument("--data", default="sfumato-data", help="queue database and outputs (default: ./sfumato-data)")
    serve.add_argument("--graphs", default=None,
                       help="a folder of more graphs offered by name (the shipped graphs are always offered)")
    serve.add_argument("--allow-read", dest="allow_read", action="append", default=[], metavar="DIR",
                       help="a folder jobs may read files from (repeatable); jobs read only the data folder, "
                            "the graphs folder and these, and write only inside the data folder")
    serve.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                       help="another host name this server answers to (repeatable; '*' for any). "
                            "localhost, 127.0.0.1, [::1] and --host are always allowed")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--max-queued", type=int, default=1000, help="most queued jobs (default: 1000)")
    serve.add_argument("--max-sweep-runs", type=int, default=256, help="most runs in one sweep job (default: 256)")
    serve.add_argument("--max-image-pixels", type=int, default=None,
                       help="most pixels in one image a job may make (default: 4096x4096; a batch: 4 times that)")
    serve.add_argument("--max-text-length", type=int, default=None,
                       help="most characters of a text a job may build (default: 100,000)")
    serve.add_argument("--max-body-mb", type=float, default=2.0,
                       help="largest JSON request body in MB (default: 2; PNG imports may be 10 times larger)")
    serve.add_argument("--policy", default=None, metavar="FILE",
                       help="a JSON policy applied to every job: prompt and image screening, watermark, "
                            "C2PA signing (see the server docs)")
    serve.add_argument("--strip-prompts", action="store_true",
                       help="keep prompts out of saved images' metadata and out of finished jobs' records")
    serve.add_argument("--keep-days", type=float, default=None, metavar="N",
                       help="delete finished jobs and their outputs after N days")
    serve.add_argument("--webhook-allow", dest="webhook_allow", action="append", default=[], metavar="HOST[:PORT]",
                       help="a host (and port) jobs' webhooks may call (repeatable); without it, jobs may name "
                            "no webhook, so clients cannot make this server call other machines")
    serve.add_argument("--webhook-secret", default=None, metavar="SECRET",
                       help="sign each webhook call: X-Sfumato-Signature: sha256=HMAC-SHA256(SECRET, body) "
                            "(default: $SFUMATO_WEBHOOK_SECRET, which other users cannot read in the process list)")
    serve.add_argument("--max-wait", type=float, default=60.0, metavar="SECONDS",
                       help="longest ?wait=true of POST /api/graphs/NAME/run (default: 60)")
    serve.add_argument("--executor", default="local",
                       help="where queued jobs run: local (this process), or one a plugin adds (ray)")
    serve.add_argument("--address", default=None, help="executor address (ray: auto or ray://host:port; "
                                                       "default: a private local cluster)")
    serve.add_argument("--workers", type=int, default=None,
                       help="executor workers (ray: default one per GPU, one on a machine without)")
    serve.set_defaults(handler=serve_command)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_command(args: argparse.Namespace) -> int:
    import dataclasses

    from sfumato import Limits, set_limits

    if not is_loopback(args.host) and not args.token:
        print(f"error: binding to {args.host} exposes the server beyond this machine; give --token TOKEN")
        return 2
    for name, value in (("--max-queued", args.max_queued), ("--max-sweep-runs", args.max_sweep_runs),
                        ("--max-wait", args.max_wait), ("--workers", args.workers),
                        ("--max-body-mb", args.max_body_mb), ("--max-image-pixels", args.max_image_pixels),
                        ("--max-text-length", args.max_text_length)):
        if value is not None and value <= 0:
            print(f"error: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    body = int(args.max_body_mb * 1024 * 1024)
    # Strangers' requests reach a server: tighter resource limits than the command line's, for this process.
    limits = Limits.for_server()
    pixels = args.max_image_pixels or limits.max_image_pixels
    limits = dataclasses.replace(limits, max_image_pixels=pixels, max_batch_pixels=4 * pixels,
                                 max_text_length=args.max_text_length or limits.max_text_length,
                                 max_sweep_runs=args.max_sweep_runs)
    # Set for as long as this command serves, and put back after: `serve` called in-process (tests,
    # scripts) must not leave the next command with the server's limits.
    previous = set_limits(limits)
    try:
        return _serve(args, body)
    finally:
        set_limits(previous)


def _serve(args: argparse.Namespace, body: int) -> int:
    import uvicorn

    from sfumato import SfumatoError

    from .app import ServerConfig, create_app
    from .store import QueueDatabaseError

    for folder in args.allow_read:
        if not Path(folder).is_dir():
            print(f"error: --allow-read {folder}: not a folder", file=sys.stderr)
            return 2
    from .policy import PolicyError, load_policy
    from .webhooks import WebhookPolicy, parse_allowed

    try:
        webhooks = WebhookPolicy(allowed=tuple(parse_allowed(entry) for entry in args.webhook_allow),
                                 secret=args.webhook_secret or os.environ.get("SFUMATO_WEBHOOK_SECRET") or None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.keep_days is not None and args.keep_days <= 0:
        print(f"error: --keep-days must be positive, got {args.keep_days}", file=sys.stderr)
        return 2
    try:
        policy = load_policy(args.policy, strip_prompts=args.strip_prompts, keep_days=args.keep_days)
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The policy's image classifier is read by jobs' graphs (its screening node), so jobs may read it.
    allow_read = (*args.allow_read, *policy.readable_folders())
    config = ServerConfig(data=Path(args.data).resolve(), graphs=Path(args.graphs).resolve() if args.graphs else None,
                          token=args.token, allow_read=tuple(Path(folder).resolve() for folder in allow_read),
                          device=args.device, dtype=args.dtype, host=args.host,
                          allowed_hosts=tuple(args.allowed_hosts), max_queued=args.max_queued,
                          max_sweep_runs=args.max_sweep_runs, max_body_bytes=body, max_image_bytes=10 * body,
                          policy=policy, webhooks=webhooks, max_wait_s=args.max_wait, executor=args.executor,
                          executor_address=args.address, executor_workers=args.workers)
    try:
        app = create_app(config)
    except QueueDatabaseError as error:
        print(f"error: {error}. Move the file away (or give another --data folder) to start with an empty queue.",
              file=sys.stderr)
        return 2
    except SfumatoError as error:  # an unknown executor, one whose requirements are missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.host in ("0.0.0.0", "::", "[::]") and not args.allowed_hosts:
        print("note: only requests addressed to localhost, 127.0.0.1 or [::1] are answered; give --allowed-host "
              "NAME for each name or address other machines use to reach this one")
    if app.state.recovered:
        print(f"recovered {len(app.state.recovered)} interrupted job(s): {app.state.recovered}")
    where = "" if args.executor == "local" else f"; jobs run on the {args.executor} executor"
    print(f"sfumato serving on http://{args.host}:{args.port}/  (data in {config.data}{where})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
