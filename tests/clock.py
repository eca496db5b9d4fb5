"""A stopped clock for the module under test, so a test about time does not depend on how fast
the machine runs between two of its lines."""

import time
from typing import Any


class StoppedClock:
    """Stands in for the `time` module of one module under test (monkeypatch.setattr(module,
    "time", clock)): time(), time_ns() and monotonic() stay where the clock starts until the
    test calls advance(); anything else is the real time module's."""

    def __init__(self, start: float | None = None) -> None:
        self._ns = time.time_ns() if start is None else round(start * 1_000_000_000)

    def advance(self, seconds: float) -> None:
        self._ns += round(seconds * 1_000_000_000)

    def time_ns(self) -> int:
        return self._ns

    def time(self) -> float:
        return self._ns / 1_000_000_000

    monotonic = time

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
