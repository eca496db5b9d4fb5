"""Drain slots (how many drains run on a shard) and the ingest workers' heartbeats.

# Documented in docs/staging.md ("Drain slots").
"""

import logging
import time

import redis
from django.conf import settings

from messages.staging.refusals import best_effort_failed, metrics_results_check
from messages.staging.shards import Shard, workers_key
from messages.staging.stream import consumer_name
from project.redis import redis_client

logger = logging.getLogger(__name__)


def slot_acquire(shard: Shard, slot: int, holder: str, *, if_full: bool = False) -> bool:
    """Take a drain slot; when Redis is over maxmemory (it refuses SET) answer `if_full`:
    True where a drain must still run (the sweep, a drain going on), False where it is only an
    extra helper (fan-out), so a full Redis cannot multiply drains without bound."""
    try:
        return bool(redis_client().set(shard.slot(slot), holder, nx=True, ex=settings.MESSY_DRAIN_SLOT_TTL))
    except redis.exceptions.OutOfMemoryError:
        best_effort_failed("taking a drain slot")
        return if_full


def slot_refresh(shard: Shard, slot: int) -> None:
    """Best-effort: slots only limit how many drains run, and a full Redis refuses SET."""
    try:
        redis_client().set(shard.slot(slot), consumer_name(), ex=settings.MESSY_DRAIN_SLOT_TTL)
    except redis.exceptions.OutOfMemoryError:
        best_effort_failed("refreshing a drain slot")


def slot_release(shard: Shard, slot: int) -> None:
    redis_client().delete(shard.slot(slot))


# How often an ingest worker says it is alive, and how long after its last word it no longer
# counts: a worker killed with -9 stops adding drain slots within a TTL.
WORKER_HEARTBEAT_SECONDS = 5.0
WORKER_HEARTBEAT_TTL_MS = 20_000


def worker_heartbeat(name: str, processes: int) -> None:
    """Count the worker `name` (host and pid of a Celery worker) and its `processes` pool
    processes among the live ingest workers for WORKER_HEARTBEAT_TTL_MS more; forget the
    expired ones. Best-effort: a full Redis refuses it, and the slots then shrink, never lose
    anything."""
    now_ms = int(time.time() * 1000)
    pipe = redis_client().pipeline(transaction=False)
    pipe.zadd(workers_key(), {f"{name}={processes}": now_ms + WORKER_HEARTBEAT_TTL_MS})
    pipe.zremrangebyscore(workers_key(), "-inf", now_ms)
    results = pipe.execute(raise_on_error=False)
    metrics_results_check(results)


def worker_forget(name: str) -> None:
    """A worker stopping cleanly leaves the count at once (by name, whatever its size)."""
    client = redis_client()
    members = [m for m in client.zrange(workers_key(), 0, -1) if m.rpartition(b"=")[0] == name.encode()]
    if members:
        client.zrem(workers_key(), *members)


def drain_capacity() -> int:
    """How many drains may run on one shard at once: the pool processes of the live ingest
    workers (each process runs one task at a time), at least 1. So a worker added on a new
    host raises it within one heartbeat, and a dead one lowers it within a TTL."""
    now_ms = int(time.time() * 1000)
    try:
        live = redis_client().zrangebyscore(workers_key(), now_ms, "+inf")
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        # On a cluster its master may be failing over: no helpers now, the drain goes on.
        logger.warning("could not read the live ingest workers; no drain helpers for now")
        return 1
    return max(1, sum(int(member.rpartition(b"=")[2] or 0) for member in live))
