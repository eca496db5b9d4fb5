"""Best-effort writes that a full Redis (over maxmemory) refuses: noted, never fatal."""

import logging
import time
from collections.abc import Iterable
from typing import Any

import redis

logger = logging.getLogger(__name__)


_BEST_EFFORT_LOG_SECONDS = 60.0
_best_effort_logged: dict[str, float] = {}


def best_effort_failed(what: str) -> None:
    """Note a best-effort write Redis refused (over maxmemory): a warning at most once a minute
    per kind, since a full Redis refuses it on every batch until the drains empty it."""
    now = time.monotonic()
    if now - _best_effort_logged.get(what, -_BEST_EFFORT_LOG_SECONDS) >= _BEST_EFFORT_LOG_SECONDS:
        _best_effort_logged[what] = now
        logger.warning("Redis is over maxmemory and refused %s; carrying on without it", what)


def metrics_results_check(results: Iterable[Any]) -> None:
    for result in results:
        if isinstance(result, redis.exceptions.OutOfMemoryError):
            best_effort_failed("a metrics update")
        elif isinstance(result, Exception):
            raise result
