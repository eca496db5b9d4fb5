"""The staging stream of a shard: its consumer group, the drains' batch reads and acks."""

import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from messages.staging.figures import batch_size_bucket
from messages.staging.refusals import best_effort_failed, metrics_results_check
from messages.staging.shards import Shard, each_shard, marker_key, shards
from project.redis import redis_client

logger = logging.getLogger(__name__)


CONSUMER_GROUP = "persisters"


def consumer_name() -> str:
    """Unique per process, so a restarted worker never inherits a dead one's pending entries
    by name; they are reclaimed by idle time instead."""
    return f"{socket.gethostname()}:{os.getpid()}"


def group_ensure(shard: Shard) -> None:
    try:
        redis_client().xgroup_create(shard.stream, CONSUMER_GROUP, id="0", mkstream=True)
    except redis.exceptions.OutOfMemoryError:
        # Refused before Redis even looks: the group almost surely exists (the first sweep or
        # drain made it). If it does not, the read fails with NOGROUP and a later run retries.
        best_effort_failed("creating the consumer group")
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True, slots=True)
class StagedEntry:
    entry_id: bytes
    payload: bytes


def _entries(raw: Sequence[Any], shard: Shard) -> list[StagedEntry]:
    """The readable entries of a read. Entries deleted while pending (an erasure's XDEL) come
    back empty: they have nothing left to store, so they are acknowledged here, or they would
    come back on every read of this consumer's pending entries."""
    entries = []
    emptied = []
    for entry_id, fields in raw:
        if fields and b"m" in fields:
            entries.append(StagedEntry(entry_id, fields[b"m"]))
        else:
            emptied.append(entry_id)
    if emptied:
        redis_client().xack(shard.stream, CONSUMER_GROUP, *emptied)
    return entries


class BatchReader:
    """One drain run's reads: first this consumer's own pending entries (left by a crash or a
    database error, or parked when their dead-lettering was refused), then entries abandoned
    by dead consumers, then new ones.

    The own pending entries are read once per run, walking forward from the last one read,
    not from the start each time: an entry that stays pending (its dead letter refused by a
    full Redis) is then retried by the next run instead of being read again and again ahead
    of everything behind it."""

    def __init__(self, shard: Shard, consumer: str) -> None:
        self.consumer = consumer
        self.shard = shard
        self._history: bytes | None = b"0"  # None once the own pending entries are read

    def claim(self, count: int) -> list[StagedEntry]:
        """The next batch, waiting up to MESSY_DRAIN_IDLE_WAIT_MS for new entries. (Under
        steady traffic the drain that is already running picks the next messages up, instead
        of exiting and making the next write publish a new task.)"""
        client = redis_client()
        stream = self.shard.stream
        while self._history is not None:
            response = client.xreadgroup(CONSUMER_GROUP, self.consumer, {stream: self._history}, count=count)
            raw = response[0][1] if response else []
            if not raw:
                self._history = None
                break
            self._history = raw[-1][0]
            entries = _entries(raw, self.shard)
            if entries:
                return entries
        # XAUTOCLAIM drops entries deleted while pending by itself (its third answer).
        _, claimed, *_ = client.xautoclaim(
            stream, CONSUMER_GROUP, self.consumer, settings.MESSY_DRAIN_RECLAIM_IDLE_MS, "0-0", count=count
        )
        if claimed:
            logger.info("reclaimed %d staged entries from idle consumers", len(claimed))
            entries = _entries(claimed, self.shard)
            if entries:
                return entries
        # block=0 would wait forever: no wait is None.
        wait_ms = settings.MESSY_DRAIN_IDLE_WAIT_MS or None
        response = client.xreadgroup(CONSUMER_GROUP, self.consumer, {stream: ">"}, count=count, block=wait_ms)
        return _entries(response[0][1], self.shard) if response else []


def batch_claim(shard: Shard, consumer: str, count: int) -> list[StagedEntry]:
    """One batch for `consumer`, as the first read of a drain run (BatchReader)."""
    return BatchReader(shard, consumer).claim(count)


def batch_ack(
    shard: Shard, entry_ids: Sequence[bytes], stored: int, batch_lag_ms: int, message_ids: Sequence[str] = ()
) -> None:
    """Delete and acknowledge stored entries, then their status markers (of `message_ids`) and
    count the batch; one round trip.

    Not a MULTI transaction: Redis over maxmemory refuses every MULTI, but still allows XDEL
    and XACK, and the drains must go on emptying a full stream. Both are idempotent. XDEL goes
    first: if the connection or Redis dies between the two, the entry is gone but still
    pending, and the next read of the pending entries returns it empty and acknowledges it
    (XAUTOCLAIM drops it by itself). The other order would leave a stored entry in the stream,
    acknowledged, never delivered again, counted in the backlog for ever.
    The counters are best-effort (refused while Redis is full)."""
    if not entry_ids:
        return
    stream, metrics = shard.stream, shard.metrics
    pipe = redis_client().pipeline(transaction=False)
    pipe.xdel(stream, *entry_ids)
    pipe.xack(stream, CONSUMER_GROUP, *entry_ids)
    if message_ids:
        # A marker left behind (this round trip lost) expires, and a status read checks the
        # entry it names anyway.
        # One DEL a key: a cluster client's pipeline refuses a DEL of several keys.
        for message_id in message_ids:
            pipe.delete(marker_key(shard, message_id))
    pipe.hincrby(metrics, "drain_batches", 1)
    pipe.hincrby(metrics, "drain_entries", len(entry_ids))
    pipe.hincrby(metrics, "stored", stored)
    pipe.hincrby(metrics, f"drain_batch_size_le_{batch_size_bucket(len(entry_ids))}", 1)
    pipe.hset(metrics, "drain_lag_ms", batch_lag_ms)
    results = pipe.execute(raise_on_error=False)
    for result in results[:2]:
        if isinstance(result, Exception):
            raise result
    metrics_results_check(results[2:])


def backlog(shard: Shard | None = None) -> int:
    """Entries staged in one shard, or (None) in all of them."""
    if shard is not None:
        return int(redis_client().xlen(shard.stream))
    if len(shards()) == 1:
        return int(redis_client().xlen(shards()[0].stream))
    return sum(int(n) for n in each_shard(lambda pipe, shard: pipe.xlen(shard.stream)))


def backlog_oldest_ms() -> int | None:
    """Unix ms at which the oldest staged message was accepted (its stream entry id is that
    millisecond), or None when nothing is staged. One XRANGE of one entry per shard."""
    firsts = each_shard(lambda pipe, shard: pipe.xrange(shard.stream, min="-", max="+", count=1))
    oldest = [int(first[0][0].split(b"-")[0]) for first in firsts if first]
    return min(oldest) if oldest else None


def stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def entry_ms(entry_id: bytes | str) -> int:
    """The Unix millisecond a stream entry was added at (the first part of its id)."""
    return stream_id(entry_id)[0]


def undelivered_exists(shard: Shard) -> bool:
    """Whether the shard's stream holds entries not yet handed to any consumer of the group."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xinfo_stream(shard.stream)
    pipe.xinfo_groups(shard.stream)
    try:
        stream, groups = pipe.execute()
    except redis.ResponseError:  # no stream yet
        return False
    group = next((g for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode())), None)
    if group is None:
        return stream["length"] > 0
    return stream_id(stream["last-generated-id"]) > stream_id(group["last-delivered-id"])


def accepted_total() -> int:
    """Messages ever staged: the streams' own entries-added counters."""
    total = 0
    for shard in shards():
        with contextlib.suppress(redis.ResponseError):  # no stream yet
            total += int(redis_client().xinfo_stream(shard.stream)["entries-added"])
    return total


def consumers_prune(idle_ms: int = 3_600_000) -> int:
    """Forget consumers (dead worker processes) that own nothing and were idle an hour, on
    every shard."""
    client = redis_client()
    removed = 0
    for shard in shards():
        try:
            consumers = client.xinfo_consumers(shard.stream, CONSUMER_GROUP)
        except (redis.ResponseError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            continue  # no group yet, or (a cluster) its master is failing over: next time
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] > idle_ms:
                try:
                    client.xgroup_delconsumer(shard.stream, CONSUMER_GROUP, consumer["name"])
                except redis.exceptions.OutOfMemoryError:
                    best_effort_failed("pruning idle consumers")
                    return removed
                removed += 1
    return removed
