"""Webhooks: a URL a job names, called with its result when it ends.

``POST URL`` with ``{"id", "status", "graph", "outputs", "files", "error", "partial", "url"}``
(the job's :meth:`~sfumato_server.store.Job.result`). A call that fails (no
connection, a timeout, an answer other than 2xx) is retried after a pause that
doubles each time, up to ``max_attempts`` calls; how the delivery stands is
kept with the job in the queue database, so a delivery still owed when the
server stops is made when it starts again.

Deliveries run in a thread of their own: a slow or dead receiver delays other
deliveries, never a job.

A server open to untrusted clients must not become a tool for reaching what
only it can reach (server-side request forgery). So a webhook URL is refused
when it is submitted unless its host, and port when the operator named one,
is on the operator's list (``sfumato serve --webhook-allow HOST[:PORT]``); a
URL with credentials, or a scheme other than http and https, is refused too.
A receiver's redirect is not followed (it could point anywhere), and proxy
settings from the environment are ignored.

With a secret (``--webhook-secret``), each call carries
``X-Sfumato-Signature: sha256=HEX``, the HMAC-SHA256 of the body under the
secret, so a receiver can tell the server's calls from anyone else's.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .guard import host_name
from .jobspec import RequestError
from .store import JobStore

#: Longest webhook URL accepted.
MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_allowed(entry: str) -> tuple[str, int | None]:
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port or None)``; ValueError when malformed."""
    text = entry.strip()
    if not text or "/" in text or "@" in text:
        raise ValueError(f"--webhook-allow {entry!r}: expected HOST or HOST:PORT")
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--webhook-allow {entry!r}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"--webhook-allow {entry!r}: no host name")
    return host_name(parts.hostname), port


@dataclass(frozen=True)
class WebhookPolicy:
    """Which webhook URLs a job may name, and how deliveries are retried."""

    #: ``(host, port or None)`` pairs from ``--webhook-allow``; a ``None`` port allows any port of the host.
    allowed: tuple[tuple[str, int | None], ...] = ()
    max_attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 10.0
    #: Signs each call's body (``X-Sfumato-Signature``); None: calls are not signed.
    secret: str | None = None

    def signature(self, body: bytes) -> str | None:
        """The ``X-Sfumato-Signature`` header value of a body, or None without a secret."""
        if self.secret is None:
            return None
        return "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()

    def check(self, url: Any) -> str:
        """The URL when a job may name it; :class:`RequestError` (400) saying why not."""
        if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
            raise RequestError(400, f"'webhook' must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise RequestError(400, f"the webhook {url[:200]!r} is not an http or https URL")
        if parts.username is not None or parts.password is not None:
            raise RequestError(400, "a webhook URL may not carry a user name or password")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise RequestError(400, f"the webhook {url[:200]!r} has an invalid port") from None
        host = host_name(parts.hostname)
        if not self.allowed:
            raise RequestError(400, "this server calls no webhooks: its operator allowed no host "
                                    "(sfumato serve --webhook-allow HOST[:PORT])")
        if not any(host == allowed and (allowed_port is None or port == allowed_port)
                   for allowed, allowed_port in self.allowed):
            allowed = ", ".join(h if p is None else f"{h}:{p}" for h, p in self.allowed)
            raise RequestError(400, f"webhooks to {host}:{port} are not allowed on this server "
                                    f"(allowed: {allowed})")
        return url

    def delay(self, attempts: int) -> float:
        """The pause before the next call after ``attempts`` failed ones."""
        return min(self.first_delay_s * 2 ** max(0, attempts - 1), self.max_delay_s)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer becomes an HTTPError: a failed call


class WebhookSender:
    """Delivers ended jobs' webhooks in one thread, with retries; see the module docstring."""

    def __init__(self, store: JobStore, policy: WebhookPolicy) -> None:
        self.store, self.policy = store, policy
        self._due: list[tuple[float, int, int]] = []  # (when, sequence, job id)
        self._sequence = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: The latest error that stopped a delivery attempt before it was recorded (for debugging).
        self.last_error: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def start(self) -> None:
        """Start the thread, and schedule the deliveries a previous run of the server still owed."""
        for job in self.store.undelivered_webhooks():
            self.send(job.id)
        self._thread = threading.Thread(target=self._loop, name="sfumato-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (deliveries still owed are made at the next start)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.policy.timeout_s + 1)

    def send(self, job_id: int, delay: float = 0.0) -> None:
        """Schedule a delivery of the job's webhook (nothing happens if it has none)."""
        with self._condition:
            self._sequence += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._sequence, job_id))
            self._condition.notify_all()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._condition.wait(timeout=(self._due[0][0] - time.monotonic()) if self._due else None)
                if self._stopping:
                    return
                _, _, job_id = heapq.heappop(self._due)
            try:
                self._deliver(job_id)
            except Exception as error:  # noqa: BLE001 - a broken row or database must not end the deliveries
                self.last_error = f"job {job_id}: {type(error).__name__}: {error}"

    def _deliver(self, job_id: int) -> None:
        job = self.store.get(job_id)
        if job is None or job.webhook is None or job.webhook.get("delivered") or job.webhook.get("gave_up"):
            return
        state = dict(job.webhook)
        state["attempts"] = int(state.get("attempts", 0)) + 1
        body = json.dumps(job.result(), default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "sfumato-webhook/1", "X-Sfumato-Job": str(job.id)}
        signature = self.policy.signature(body)
        if signature is not None:
            headers["X-Sfumato-Signature"] = signature
        request = urllib.request.Request(state["url"], data=body, method="POST", headers=headers)
        try:
            with self._opener.open(request, timeout=self.policy.timeout_s) as response:
                response.read(65536)
            state.update(delivered=True, last_error=None, status=response.status)
        except urllib.error.HTTPError as error:
            state.update(delivered=False, last_error=f"HTTP {error.code}", status=error.code)
        except (OSError, ValueError) as error:  # no connection, timeout, refused, a bad answer
            state.update(delivered=False, last_error=f"{type(error).__name__}: {error}"[:300], status=None)
        retry = not state["delivered"] and state["attempts"] < self.policy.max_attempts
        if not state["delivered"] and not retry:
            state["gave_up"] = True
        self.store.set_webhook(job.id, state)  # recorded first: the retry reads the attempts back
        if retry:
            self.send(job.id, self.policy.delay(state["attempts"]))
