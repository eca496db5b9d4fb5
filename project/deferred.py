"""Sends a web process holds for a moment, to make them in one go (SendBuffer).

Items go out when max_items are held, once the oldest has waited max_age (before the next
request, or while the server waits for one), or on a clean stop. Only runserver.sh's web server
holds anything (its worker class calls enable()); elsewhere add() sends at once. What is held
dies with its process: only sends that another copy makes good belong here.

# Documented in docs/fast-path.md ("Deferred copies").
"""

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, bytes]], None]

_enabled = False
_buffers: list["SendBuffer"] = []


class SendBuffer:
    def __init__(self, send: Send, max_items: int, max_age: float) -> None:
        self._send = send
        self._max_items = max_items
        self._max_age = max_age
        self._held: dict[str, bytes] = {}
        self._since = 0.0  # time.monotonic() when the oldest held item was added
        _buffers.append(self)

    def add(self, items: dict[str, bytes]) -> None:
        """Send the items now, or with later ones when this process holds sends."""
        if not _enabled:
            self._send(items)
            return
        if not self._held:
            self._since = time.monotonic()
        self._held.update(items)
        if len(self._held) >= self._max_items:
            self.flush()

    def holding(self) -> bool:
        return bool(self._held)

    def overdue(self, now: float) -> bool:
        return bool(self._held) and now >= self.due_at()

    def due_at(self) -> float:
        """When what is held becomes overdue (time.monotonic())."""
        return self._since + self._max_age

    def flush(self) -> None:
        held, self._held = self._held, {}
        if held:
            self._send(held)


def enable() -> None:
    """Hold sends in this process from now on: only for a server that calls the flushes."""
    global _enabled
    _enabled = True


def seconds_until_due() -> float | None:
    """How long until the first held send is overdue (0 if one is), or None when none is held."""
    held = [buffer for buffer in _buffers if buffer.holding()]
    if not held:
        return None
    return max(0.0, min(buffer.due_at() for buffer in held) - time.monotonic())


def flush_all() -> None:
    """Send everything held. For the server, between requests: never raises."""
    for buffer in _buffers:
        _flush_logged(buffer)


def flush_overdue() -> None:
    """Send what has been held max_age or longer. For the server, before a request: never raises."""
    now = time.monotonic()
    for buffer in _buffers:
        if buffer.overdue(now):
            _flush_logged(buffer)


def _flush_logged(buffer: SendBuffer) -> None:
    try:
        buffer.flush()
    except Exception:
        logger.warning("could not make a deferred send; what it held is dropped", exc_info=True)
