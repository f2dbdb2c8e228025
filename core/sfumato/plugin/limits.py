"""Resource limits: how big an image, a batch, a text or a sweep may get.

A graph file is untrusted input: ``{"width": 16384, "height": 16384}`` asks
for a gigabyte, ``{x:>999999999}`` for a 100 MB string, ``seed=0..20000000``
for twenty million runs. Each is refused with a clear error before anything is
allocated: at validation where the size follows from literal inputs, and by
the node itself, before it allocates, where the size depends on its inputs.

:class:`Limits` holds the numbers. The command line uses the defaults
(generous: a user's own machine); :meth:`Limits.for_server` is tighter. A
process sets its limits once with :func:`set_limits` (the server does at
start). :func:`limits_scope` sets them for the current thread and context only
(validation, a test): nodes that an engine runs on worker threads see the
process's limits. Nodes read them with :func:`current_limits`.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import SfumatoError


class LimitExceededError(SfumatoError, ValueError):
    """A value asks for more than the resource limits allow.

    Also a ``ValueError``, so a node raising it fails like any bad value; the
    message names the field, the size asked for and the limit.
    """


@dataclass(frozen=True)
class Limits:
    """Resource limits checked at validation and before allocating.

    Attributes:
        max_image_pixels: pixels in one image (width x height).
        max_batch_pixels: pixels in all images of one batch together.
        max_text_length: characters of a text a node builds (template output,
            format widths).
        max_sweep_runs: runs in one sweep (the product of its axes' lengths).
    """

    max_image_pixels: int = 8192 * 8192
    max_batch_pixels: int = 4 * 8192 * 8192
    max_text_length: int = 1_000_000
    max_sweep_runs: int = 100_000

    @classmethod
    def for_server(cls) -> "Limits":
        """Tighter limits for a server that strangers' requests reach."""
        return cls(max_image_pixels=4096 * 4096, max_batch_pixels=4 * 4096 * 4096,
                   max_text_length=100_000, max_sweep_runs=1_000)

    def check_image(self, width: int, height: int, what: str) -> None:
        """Refuse one image of ``width`` x ``height``; ``what`` names the field or node."""
        pixels = int(width) * int(height)
        if pixels > self.max_image_pixels:
            raise LimitExceededError(
                f"{what}: a {width}x{height} image has {pixels:,} pixels, more than the limit of "
                f"{self.max_image_pixels:,} (Limits.max_image_pixels)")

    def check_batch(self, sizes: list[tuple[int, int]], what: str) -> None:
        """Refuse a batch of images of these ``(width, height)`` sizes, each and all together."""
        for width, height in sizes:
            self.check_image(width, height, what)
        total = sum(int(w) * int(h) for w, h in sizes)
        if total > self.max_batch_pixels:
            raise LimitExceededError(
                f"{what}: {len(sizes)} images of {total:,} pixels together, more than the limit of "
                f"{self.max_batch_pixels:,} (Limits.max_batch_pixels)")

    def check_text_length(self, length: int, what: str) -> None:
        """Refuse a text of ``length`` characters."""
        if length > self.max_text_length:
            raise LimitExceededError(
                f"{what}: {length:,} characters, more than the limit of {self.max_text_length:,} "
                "(Limits.max_text_length)")

    def check_sweep_runs(self, runs: int, what: str) -> None:
        """Refuse a sweep of ``runs`` runs (computed from the axes' lengths, before building it)."""
        if runs > self.max_sweep_runs:
            raise LimitExceededError(
                f"{what}: {runs:,} runs, more than the limit of {self.max_sweep_runs:,} (Limits.max_sweep_runs)")


_process_limits = Limits()
_scoped: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("sfumato_limits", default=None)


def current_limits() -> Limits:
    """The limits in force: those of an enclosing :func:`limits_scope`, else the process's."""
    return _scoped.get() or _process_limits


def set_limits(limits: Limits) -> Limits:
    """Set the process's limits (threads included); returns the previous ones."""
    global _process_limits
    previous, _process_limits = _process_limits, limits
    return previous


@contextmanager
def limits_scope(limits: Limits) -> Iterator[Limits]:
    """Use ``limits`` in this thread (and its context) for the duration of the block."""
    token = _scoped.set(limits)
    try:
        yield limits
    finally:
        _scoped.reset(token)
