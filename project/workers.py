"""Which Celery workers are alive, by pool, for /metrics (messy_workers_live). Documented in
docs/integrations.md.

Every worker's main process says every few seconds, from a thread (a busy pool must not delay
it), that it is alive; a worker killed with -9 stops saying it and leaves the count within a
TTL. The pool is the worker's node name before the "@" (runworker.sh: ingest@host, jobs@host).
"""

import logging
import os
import threading
import time
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from project.redis import key, redis_client

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL_MS = 20_000
# Reported even when none is alive, so that an alert sees a 0 rather than no series.
POOLS = ("ingest", "jobs")

_stop = threading.Event()
_member = ""


def workers_key() -> str:
    return key("workers", "live")


def worker_alive(member: str) -> None:
    """Count `member` ("<pool>|<node name>:<pid>|<processes>") live for HEARTBEAT_TTL_MS more,
    and forget the members whose time ran out."""
    now_ms = int(time.time() * 1000)
    pipe = redis_client().pipeline(transaction=False)
    pipe.zadd(workers_key(), {member: now_ms + HEARTBEAT_TTL_MS})
    pipe.zremrangebyscore(workers_key(), "-inf", now_ms)
    pipe.execute()


def workers_live() -> dict[str, tuple[int, int]]:
    """Per pool: (worker processes alive, their pool processes)."""
    now_ms = int(time.time() * 1000)
    live: dict[str, tuple[int, int]] = dict.fromkeys(POOLS, (0, 0))
    for raw in redis_client().zrangebyscore(workers_key(), now_ms, "+inf"):
        pool, _, processes = raw.decode().split("|")
        workers, total = live.get(pool, (0, 0))
        live[pool] = (workers + 1, total + int(processes or 0))
    return live


def _heartbeat(member: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            worker_alive(member)
        except redis.RedisError as exc:
            logger.warning("could not say this worker is alive (%s)", type(exc).__name__)
        stop.wait(HEARTBEAT_SECONDS)


@worker_ready.connect
def _workers_join(sender: Any = None, **_: Any) -> None:
    global _member
    hostname = str(getattr(sender, "hostname", "") or "worker@unknown")
    processes = int(getattr(getattr(sender, "controller", None), "concurrency", 1) or 1)
    _member = f"{hostname.partition('@')[0]}|{hostname}:{os.getpid()}|{processes}"
    _stop.clear()
    threading.Thread(target=_heartbeat, args=(_member, _stop), name="worker-heartbeat", daemon=True).start()


@worker_shutting_down.connect
@worker_shutdown.connect
def _workers_leave(**_: Any) -> None:
    if not _member or _stop.is_set():
        return
    _stop.set()
    try:
        redis_client().zrem(workers_key(), _member)
    except redis.RedisError:
        logger.warning("could not withdraw this worker from the live workers", exc_info=True)
