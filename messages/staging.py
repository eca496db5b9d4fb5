"""The durable staging area on Redis: one stream, one consumer group, a few small keys.

An accepted message is an entry in the stream until a worker has stored it in PostgreSQL;
only then is the entry acknowledged and deleted. So the stream length is the backlog, a
worker killed mid-batch leaves its entries pending (another worker reclaims them once they
have been idle long enough), and memcached never holds the only copy.

Drain "slots" only limit how many drain tasks are in flight; correctness never depends on
them, because inserts are idempotent on the message id.
"""

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CONSUMER_GROUP = "persisters"

# One round trip per write request: idempotent replay, backpressure, the append itself and
# "is a drain already scheduled?" happen atomically. (The accepted count needs no counter of
# its own: it is the stream's entries-added.)
_STAGE_SCRIPT = """
local stream, slot, idem_key, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local backlog_max, slot_ttl, idem_ttl, idem_record = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local first_payload = 5
if idem_key ~= "" then
  local existing = redis.call("GET", idem_key)
  if existing then return {"replay", existing} end
end
local count = #ARGV - first_payload + 1
local backlog = redis.call("XLEN", stream)
if backlog + count > backlog_max then
  redis.call("HINCRBY", metrics, "rejected_backpressure", count)
  return {"full", tostring(backlog)}
end
for i = first_payload, #ARGV do
  redis.call("XADD", stream, "*", "m", ARGV[i])
end
if idem_key ~= "" then redis.call("SET", idem_key, idem_record, "EX", idem_ttl) end
if redis.call("SET", slot, "web", "NX", "EX", slot_ttl) then return {"staged", "1"} end
return {"staged", "0"}
"""


def key(*parts: str) -> str:
    return ":".join((settings.REDIS_KEY_PREFIX, *parts))


def stream_key() -> str:
    return key("stream", "messages")


def dead_letter_key() -> str:
    return key("stream", "dead")


def slot_key(slot: int) -> str:
    return key("drain", "slot", str(slot))


def metrics_key() -> str:
    return key("metrics")


@dataclass(frozen=True, slots=True)
class _Connection:
    client: redis.Redis
    stage_script: Any


_connections: dict[int, _Connection] = {}


def _connection() -> _Connection:
    """This process's Redis client, created on first use, so after a pre-fork server forks.

    It holds one connection instead of checking one out of a pool per command: the checkout
    probes the socket for stray data, a system call that costs the write path about a quarter
    of its Redis time. (Threads share the connection under the client's lock; pipelines still
    take their own from the pool.) Keyed by process id so a forked child never writes to its
    parent's socket.
    """
    pid = os.getpid()
    connection = _connections.get(pid)
    if connection is None:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_TIMEOUT,
            socket_connect_timeout=settings.REDIS_TIMEOUT,
            health_check_interval=30,
            decode_responses=False,
            single_connection_client=True,
        )
        connection = _connections[pid] = _Connection(client, client.register_script(_STAGE_SCRIPT))
    return connection


def redis_client() -> redis.Redis:
    return _connection().client


def redis_client_reset() -> None:
    """Forget this process's client (the next call connects anew, with current settings)."""
    connection = _connections.pop(os.getpid(), None)
    if connection is not None:
        connection.client.close()


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """What the stage script did: "staged", "replay" (idempotency hit) or "full"."""

    result: str
    drain_needed: bool = False
    replay_record: bytes | None = None
    backlog: int = 0


def stage(payloads: Sequence[bytes | str], idempotency_key: str = "", idempotency_record: str = "") -> StageOutcome:
    """Append payloads (JSON documents) to the stream in one atomic step."""
    keys = [stream_key(), slot_key(0), idempotency_key, metrics_key()]
    args = [
        settings.MESSY_BACKLOG_MAX,
        settings.MESSY_DRAIN_SLOT_TTL,
        settings.MESSY_IDEMPOTENCY_TTL,
        idempotency_record,
        *payloads,
    ]
    result, detail = _connection().stage_script(keys=keys, args=args)
    if result == b"replay":
        return StageOutcome("replay", replay_record=detail)
    if result == b"full":
        return StageOutcome("full", backlog=int(detail))
    return StageOutcome("staged", drain_needed=detail == b"1")


def idempotency_key(api_key: str, client_key: str) -> str:
    return key("idem", api_key, client_key)


def consumer_name() -> str:
    """Unique per process, so a restarted worker never inherits a dead one's pending entries
    by name; they are reclaimed by idle time instead."""
    return f"{socket.gethostname()}:{os.getpid()}"


def group_ensure() -> None:
    try:
        redis_client().xgroup_create(stream_key(), CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True, slots=True)
class StagedEntry:
    entry_id: bytes
    payload: bytes


def _entries(raw: Sequence[Any]) -> list[StagedEntry]:
    # Entries deleted while pending come back as (id, None); they have nothing left to store.
    return [StagedEntry(entry_id, fields[b"m"]) for entry_id, fields in raw if fields and b"m" in fields]


def batch_claim(consumer: str, count: int) -> list[StagedEntry]:
    """Next batch for this consumer: its own unacknowledged entries first (a retry after a
    database error), then entries abandoned by dead consumers, then new ones, waiting up to
    MESSY_DRAIN_IDLE_WAIT_MS for some to arrive. (Under steady traffic the drain that is
    already running picks the next messages up, instead of exiting and making the next write
    publish a new task.)"""
    client = redis_client()
    stream = stream_key()
    for start in ("0", ">"):
        if start == ">":
            _, claimed, *_ = client.xautoclaim(
                stream, CONSUMER_GROUP, consumer, settings.MESSY_DRAIN_RECLAIM_IDLE_MS, "0-0", count=count
            )
            if claimed:
                logger.info("reclaimed %d staged entries from idle consumers", len(claimed))
                return _entries(claimed)
        # block=0 would wait forever: no wait is None.
        wait_ms = settings.MESSY_DRAIN_IDLE_WAIT_MS if start == ">" else 0
        response = client.xreadgroup(CONSUMER_GROUP, consumer, {stream: start}, count=count, block=wait_ms or None)
        if response and response[0][1]:
            return _entries(response[0][1])
    return []


def batch_ack(entry_ids: Sequence[bytes], stored: int, batch_lag_ms: int) -> None:
    """Acknowledge and delete stored entries, and count the batch, in one transaction."""
    if not entry_ids:
        return
    pipe = redis_client().pipeline(transaction=True)
    pipe.xack(stream_key(), CONSUMER_GROUP, *entry_ids)
    pipe.xdel(stream_key(), *entry_ids)
    pipe.hincrby(metrics_key(), "drain_batches", 1)
    pipe.hincrby(metrics_key(), "drain_entries", len(entry_ids))
    pipe.hincrby(metrics_key(), "stored", stored)
    pipe.hincrby(metrics_key(), f"drain_batch_size_le_{batch_size_bucket(len(entry_ids))}", 1)
    pipe.hset(metrics_key(), "drain_lag_ms", batch_lag_ms)
    pipe.execute()


DRAIN_BATCH_BUCKETS = (1, 10, 100, 1000, 5000, 10000)


def batch_size_bucket(size: int) -> str:
    for bound in DRAIN_BATCH_BUCKETS:
        if size <= bound:
            return str(bound)
    return "inf"


def dead_letter(entry: StagedEntry, reason: str) -> None:
    """Park an entry that can never be stored, so it does not block the ones behind it."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.xadd(dead_letter_key(), {"m": entry.payload, "reason": reason[:500]}, maxlen=100_000, approximate=True)
    pipe.xack(stream_key(), CONSUMER_GROUP, entry.entry_id)
    pipe.xdel(stream_key(), entry.entry_id)
    pipe.hincrby(metrics_key(), "dead_lettered", 1)
    pipe.execute()


def backlog() -> int:
    return int(redis_client().xlen(stream_key()))


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def undelivered_exists() -> bool:
    """Whether the stream holds entries not yet handed to any consumer of the group."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xinfo_stream(stream_key())
    pipe.xinfo_groups(stream_key())
    try:
        stream, groups = pipe.execute()
    except redis.ResponseError:  # no stream yet
        return False
    group = next((g for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode())), None)
    if group is None:
        return stream["length"] > 0
    return _stream_id(stream["last-generated-id"]) > _stream_id(group["last-delivered-id"])


def accepted_total() -> int:
    """Messages ever staged: the stream's own entries-added counter."""
    try:
        return int(redis_client().xinfo_stream(stream_key())["entries-added"])
    except redis.ResponseError:  # no stream yet
        return 0


def slot_acquire(slot: int, holder: str) -> bool:
    return bool(redis_client().set(slot_key(slot), holder, nx=True, ex=settings.MESSY_DRAIN_SLOT_TTL))


def slot_refresh(slot: int) -> None:
    redis_client().set(slot_key(slot), consumer_name(), ex=settings.MESSY_DRAIN_SLOT_TTL)


def slot_release(slot: int) -> None:
    redis_client().delete(slot_key(slot))


def metrics_snapshot() -> dict[str, int]:
    raw = redis_client().hgetall(metrics_key())
    return {name.decode(): int(value) for name, value in raw.items()}


def metrics_incr(name: str, amount: int = 1) -> None:
    redis_client().hincrby(metrics_key(), name, amount)


def consumers_prune(idle_ms: int = 3_600_000) -> int:
    """Forget consumers (dead worker processes) that own nothing and were idle an hour."""
    client = redis_client()
    removed = 0
    try:
        consumers = client.xinfo_consumers(stream_key(), CONSUMER_GROUP)
    except redis.ResponseError:
        return 0
    for consumer in consumers:
        if consumer["pending"] == 0 and consumer["idle"] > idle_ms:
            client.xgroup_delconsumer(stream_key(), CONSUMER_GROUP, consumer["name"])
            removed += 1
    return removed


def payload_decode(raw: bytes) -> dict[str, Any]:
    return orjson.loads(raw)
