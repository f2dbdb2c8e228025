"""Fan-out of job and run events to Server-Sent-Event subscribers."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any


class EventHub:
    """Thread-safe publish; each subscriber is an asyncio queue on the server's loop."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, int | None]] = []
        self._lock = threading.Lock()

    def subscribe(self, job_id: int | None = None) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue, job_id))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s[1] is not queue]

    def publish(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, default=str)
        with self._lock:
            targets = list(self._subscribers)
        for loop, queue, job_id in targets:
            if job_id is None or job_id == event.get("job"):
                loop.call_soon_threadsafe(_put, queue, text)


def _put(queue: asyncio.Queue, text: str) -> None:
    if not queue.full():  # a stalled client loses events rather than stalling the worker
        queue.put_nowait(text)
