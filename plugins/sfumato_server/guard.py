"""The server's front door: which requests reach the API at all.

A plain ASGI middleware (no request object, no body read before the checks)
that refuses, in order:

- a ``Host`` that is not one this server answers to (421): a DNS-rebinding page
  reaches 127.0.0.1 under its own name, and is refused here;
- an API write from another origin (403): browsers send ``Origin`` on every
  cross-origin POST, including the "simple" ones that skip CORS preflight;
- an API write whose body is not ``application/json`` (415): form posts and
  ``text/plain`` are what a foreign page can send without a preflight;
- a missing or wrong token when one is configured (401), compared as bytes so
  any token, ASCII or not, is compared in constant time and never raises;
- a body over the limit (413), counted as it arrives, so a chunked upload is
  cut off at the limit instead of being read whole.

The body of an accepted request is buffered (it is at most the limit) and
replayed to the application.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_to_bytes, urlsplit

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: Paths anyone may read without the token: the page, its assets and the API description.
PUBLIC_PREFIXES = ("/static/", "/api/docs/")
PUBLIC_PATHS = ("/", "/favicon.ico", "/api/docs", "/api/openapi.json")


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or netloc: without port, brackets, case or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.rsplit(":", 1)[0]
    return value.rstrip(".")


@dataclass
class GuardPolicy:
    """What the front door lets through; built from ``sfumato serve`` options."""

    served_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None
    max_body_bytes: int = 2 * 1024 * 1024
    #: Larger limit for endpoints that take an image (``POST /api/import-png``).
    max_image_bytes: int = 20 * 1024 * 1024
    #: Write endpoints that take a body other than JSON, and the types they take.
    other_body_types: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"/api/import-png": ("image/png", "application/octet-stream")})

    def hosts(self) -> set[str]:
        """Host names this server answers to."""
        names = {*LOOPBACK_NAMES, host_name(self.served_host)}
        names.update(host_name(h) for h in self.allowed_hosts)
        return names

    def host_allowed(self, header: str) -> bool:
        """Whether a ``Host`` header names this server ('*' among the allowed hosts accepts any)."""
        if "*" in self.allowed_hosts:
            return bool(header)
        return bool(header) and host_name(header) in self.hosts()


async def _respond(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _query_token(query: bytes) -> bytes | None:
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if key == b"token":
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


class Guard:
    """ASGI middleware enforcing a :class:`GuardPolicy` in front of ``app``."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app, self.policy = app, policy
        self._token = policy.token.encode("utf-8", "surrogatepass") if policy.token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self.check(scope)
        if problem is not None:
            await _respond(send, *problem)
            return
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            limit = self.policy.max_image_bytes if scope["path"] in self.policy.other_body_types \
                else self.policy.max_body_bytes
            body = await self._read_body(receive, limit)
            if body is None:
                await _respond(send, 413, f"the request body is larger than the limit of {limit} bytes")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str] | None:
        """The status and reason to refuse a request with, or None to let it through."""
        policy = self.policy
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if not policy.host_allowed(host):
            return 421, (f"this server does not answer to the host name {host_name(host)!r}; "
                         "start it with --allowed-host NAME to add one")
        path, method = scope.get("path", ""), scope.get("method", "GET")
        is_api = path.startswith("/api/")
        if method in WRITE_METHODS:
            problem = self._check_origin(scope, host)
            if problem is not None:
                return problem
            if is_api:
                content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
                media = content_type.split(";", 1)[0].strip().lower()
                allowed = ("application/json", *policy.other_body_types.get(path, ()))
                if media not in allowed:
                    return 415, (f"{path} takes a body of type {' or '.join(allowed)}"
                                 f"{', not ' + repr(media) if media else ' (no Content-Type was given)'}")
            length = _header(scope, b"content-length")
            limit = policy.max_image_bytes if path in policy.other_body_types else policy.max_body_bytes
            if length is not None and length.strip().isdigit() and int(length) > limit:
                return 413, f"the request body is {int(length)} bytes; the limit is {limit}"
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if self._token is not None and not public:
            given = _header(scope, b"authorization")
            given = given[7:].strip() if given is not None and given[:7].lower() == b"bearer " else None
            if given is None:
                given = _query_token(scope.get("query_string", b""))
            if given is None or not hmac.compare_digest(given, self._token):
                return 401, "this server needs a token: 'Authorization: Bearer TOKEN' or ?token=TOKEN"
        return None

    def _check_origin(self, scope: Scope, host: str) -> tuple[int, str] | None:
        """Writes come from this server's own page or from a client that is not a browser."""
        site = (_header(scope, b"sec-fetch-site") or b"").decode("latin-1").lower()
        if site == "cross-site":
            return 403, "cross-site requests may not change anything on this server"
        origin = _header(scope, b"origin")
        if origin is None:
            return None  # not a browser's cross-origin request: curl, scripts, the CLI
        text = origin.decode("latin-1").strip()
        parts = urlsplit(text) if text != "null" else None
        if parts is None or parts.scheme not in ("http", "https") or parts.netloc.lower() != host.strip().lower():
            return 403, f"requests from the origin {text!r} may not change anything on this server"
        return None

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as more than ``limit`` bytes have arrived."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits on the real one (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
