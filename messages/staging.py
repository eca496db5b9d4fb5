"""The durable staging area: one Redis stream, one consumer group, a few small keys, and the
memcached copies of staged payloads. Only the messages app touches them.

An accepted message is an entry in the stream until a worker has stored it in PostgreSQL;
only then is the entry acknowledged and deleted. So the stream length is the backlog, a
worker killed mid-batch leaves its entries pending (another worker reclaims them once they
have been idle long enough), and memcached never holds the only copy.

Drain "slots" only limit how many drain tasks are in flight; correctness never depends on
them, because inserts are idempotent on the message id.
"""

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson
import redis
from django.conf import settings
from django.core.cache import caches

from project.redis import key, redis_client, redis_script

logger = logging.getLogger(__name__)


class StagedPayload(TypedDict):
    """A message between acceptance and storage: the JSON document in the stream and in
    memcached, and what messages_persist stores (imports build it too)."""

    id: str  # a UUIDv7 (messages.ids)
    username: str
    city: str
    state: str
    message: str
    accepted_at: int  # Unix milliseconds, when the web process (or the import) accepted it


_PAYLOAD_TEXT_FIELDS = ("id", "username", "city", "state", "message")


def payload_decode(raw: bytes) -> StagedPayload:
    """A staged entry's payload, checked; raises ValueError, KeyError or TypeError when it is
    not a StagedPayload. (The id's form is left to PostgreSQL's uuid type.)"""
    payload = orjson.loads(raw)
    for name in _PAYLOAD_TEXT_FIELDS:
        if not isinstance(payload[name], str):
            raise TypeError(name)
    payload["accepted_at"] = int(payload["accepted_at"])
    return payload


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


def stream_key() -> str:
    return key("stream", "messages")


def dead_letter_key() -> str:
    return key("stream", "dead")


def slot_key(slot: int) -> str:
    return key("drain", "slot", str(slot))


def metrics_key() -> str:
    return key("metrics")


_STAGE = redis_script(_STAGE_SCRIPT)


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
    result, detail = _STAGE(keys=keys, args=args, client=redis_client())
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


# --- memcached copies -------------------------------------------------------------------------
# A copy of each staged payload answers "pending" status reads cheaply. Written without waiting
# for a reply (the "staged" cache is noreply): losing one costs nothing, the stream entry is the
# durable copy.


def copy_key(message_id: str) -> str:
    return f"staged:{message_id}"


def copies_store(payloads: Sequence[StagedPayload], documents: Sequence[bytes]) -> None:
    """Store the copies of staged payloads (documents: the same payloads, JSON-encoded)."""
    copies = caches["staged"]
    if len(payloads) == 1:
        copies.set(copy_key(payloads[0]["id"]), documents[0])
    else:
        copies.set_many({copy_key(p["id"]): document for p, document in zip(payloads, documents, strict=True)})


def copy_exists(message_id: str) -> bool:
    return bool(caches["staged"].get(copy_key(message_id)))


def copies_delete(message_ids: Iterable[str]) -> None:
    keys = [copy_key(message_id) for message_id in message_ids]
    if keys:
        caches["staged"].delete_many(keys)


# --- erasure -----------------------------------------------------------------------------------

SCAN_COUNT = 1000


def _username_and_id(raw: bytes | None) -> tuple[str, str]:
    # Leniently: a dead-lettered entry may be malformed and must still be found by its username.
    try:
        payload = json.loads(raw or b"")
        return str(payload["username"]), str(payload["id"])
    except (ValueError, KeyError, TypeError):
        return "", ""


def stream_user_delete(stream: str, username: str, heartbeat: Callable[[], None]) -> list[tuple[bytes, str]]:
    """Delete every entry of `username` from `stream` (stream_key() or dead_letter_key()),
    SCAN_COUNT entries at a time; return (entry id, message id) of each deleted. A backlog of a
    million entries takes seconds to scan: heartbeat() is called between chunks."""
    client = redis_client()
    deleted: list[tuple[bytes, str]] = []
    start = "-"
    while True:
        entries: list[Any] = client.xrange(stream, min=start, max="+", count=SCAN_COUNT)
        matching = []
        for entry_id, fields in entries:
            name, message_id = _username_and_id(fields.get(b"m"))
            if name == username:
                matching.append((entry_id, message_id))
        if matching:
            client.xdel(stream, *[entry_id for entry_id, _ in matching])
            deleted.extend(matching)
        if len(entries) < SCAN_COUNT:
            return deleted
        start = "(" + entries[-1][0].decode()
        heartbeat()


def pending_among(entry_ids: set[bytes]) -> set[bytes]:
    """Which of these entries a drain has read and not yet acknowledged (it acknowledges only
    after the transaction storing them committed)."""
    low, high = min(entry_ids, key=_stream_id), max(entry_ids, key=_stream_id)
    try:
        pending: list[dict[str, Any]] = redis_client().xpending_range(
            stream_key(), CONSUMER_GROUP, min=low, max=high, count=len(entry_ids) + 100_000
        )
    except redis.ResponseError:
        return set()  # no consumer group yet: nothing was ever read, nothing is in flight
    return entry_ids & {item["message_id"] for item in pending}
