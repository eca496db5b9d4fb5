"""The durable staging area: Redis streams (MESSY_STAGING_SHARDS shards), one consumer group
each, a few small keys, and the memcached copies of staged payloads. Only the messages app
touches them.

An accepted message is an entry in the stream until a worker has stored it in PostgreSQL;
only then is the entry acknowledged and deleted. So the stream length is the backlog, a
worker killed mid-batch leaves its entries pending (another worker reclaims them once they
have been idle long enough), and memcached never holds the only copy.

Drain "slots" only limit how many drain tasks are in flight on a shard: as many as there are
live ingest worker processes (drain_capacity, from their heartbeats), so adding workers adds
drains with no setting changed. Correctness never depends on them, because inserts are
idempotent on the message id.

Sharding. Every key a write touches (its shard's stream, drain slot 0 and metrics, the
client's quota bucket, the Idempotency-Key record) carries the shard's hash tag, so on a Redis
Cluster the stage script's keys share one slot and a write stays one EVALSHA on one master. A
request goes to shard_of(quota subject): the client's token bucket lives in exactly one
shard, so the quota stays exact with no cross-shard traffic, and a client's retries find their
Idempotency-Key record there. (The subject is the write API key's digest when keys are
required, which is also the scope of its Idempotency-Keys; with keys off it is the client's
address, so an anonymous client retrying from another address may reach another shard and be
accepted again: keys on, or one shard, for strict replays.) Shard tags are chosen so that their
slots sit evenly over the slot space: a cluster whose masters own equal ranges (redis-cli
--cluster create) gets shards spread over its masters. Drains, sweeps, status reads, erasures
and the figures go over every shard; the dead letters are one stream of their own.
"""

import contextlib
import json
import logging
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import orjson
import redis
from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from project import deferred
from project.conf import cached_settings
from project.redis import key, redis_client, redis_script, redis_script_run

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
    sent_at: NotRequired[int]  # Unix milliseconds, when the client says it sent it (optional)


_PAYLOAD_TEXT_FIELDS = ("id", "username", "city", "state", "message")


def payload_decode(raw: bytes) -> StagedPayload:
    """A staged entry's payload, checked; raises ValueError, KeyError or TypeError when it is
    not a StagedPayload. (The id's form is left to PostgreSQL's uuid type.)"""
    payload = orjson.loads(raw)
    for name in _PAYLOAD_TEXT_FIELDS:
        if not isinstance(payload[name], str):
            raise TypeError(name)
    payload["accepted_at"] = int(payload["accepted_at"])
    if "sent_at" in payload:
        payload["sent_at"] = int(payload["sent_at"])
    return payload


CONSUMER_GROUP = "persisters"

# One round trip per write request: idempotent replay, the client's quota, backpressure (entries
# and bytes), the append itself and "is a drain already scheduled?" happen atomically. (The
# accepted count needs no counter of its own: it is the stream's entries-added.)
#
# The quota is a token bucket per client (messages.clients.quota_subject): `burst` tokens, refilled
# at `rate` a second, one spent per accepted message, read and written as one small string
# "<tokens> <unix ms>" that expires once it would have refilled anyway (an idle client costs
# nothing). A refused request (quota, backlog, OOM) spends nothing. Time is the web host's, the
# request's millisecond (entry_ms): TIME inside the script cost Redis as much as all the rest of
# the bucket's work. The stamp kept is the latest either host has written, so a host whose clock
# is behind refills nothing until its clock passes it: clock skew between web hosts can only make
# a client wait longer, by at most the skew (NTP keeps it to milliseconds), never let it through
# faster.
#
# Entries are added at the millisecond of their message ids (`<ms>-*`; a request's ids share
# one millisecond), so a status read finds a staged message from its id alone (entry_find). If
# the stream already holds a newer entry (another web host's clock is ahead), Redis refuses
# that id and the entries take `*`, which is still later than the ids' time.
#
# When Redis is over maxmemory it refuses the script's first write (and only the first: a
# script that has written may go on). Every check comes before any write, and the first write
# (the bucket's SET, or the first XADD when quotas are off) is a pcall: refused, it answers
# "oom" with nothing written, so nothing is half-staged and no token spent. The backpressure
# counter is best-effort (pcall) for the same reason. The consumer group is made here (when the
# stream was empty; "BUSYGROUP" otherwise), after the first write, where Redis cannot refuse
# it: a full Redis refuses XGROUP CREATE from a drain, which without the group could never read
# the stream that filled it.
#
# KEYS all carry the shard's hash tag (a Redis Cluster runs a script only on keys of one slot);
# an unused one (no Idempotency-Key, no quota) is the stream's name, never read. An empty
# idem_record means no Idempotency-Key.
_STAGE_SCRIPT = """
local stream, slot, idem_key, metrics, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local backlog_max, backlog_max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot_ttl, idem_ttl, idem_record, entry_ms, group = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local rate, burst = tonumber(ARGV[8]), tonumber(ARGV[9])
local first_payload = 10
if idem_record ~= "" then
  local existing = redis.call("GET", idem_key)
  if existing then return {"replay", existing} end
end
local count = #ARGV - first_payload + 1
local tokens, stamp_ms = 0, 0
if rate > 0 then
  local now_ms = tonumber(entry_ms)
  tokens, stamp_ms = burst, now_ms
  local state = redis.call("GET", bucket)
  if state then
    local level, at = string.match(state, "^(%S+) (%S+)$")
    at = tonumber(at)
    tokens = math.min(burst, tonumber(level) + math.max(0, now_ms - at) * rate / 1000)
    stamp_ms = math.max(now_ms, at)
  end
  if tokens < count then
    local wait = math.ceil((math.min(count, burst) - tokens) / rate)
    return {"quota", tostring(math.floor(tokens)), tostring(math.max(1, wait))}
  end
end
local backlog = redis.call("XLEN", stream)
local bytes = 0
if backlog > 0 then bytes = redis.call("MEMORY", "USAGE", stream) or 0 end
for i = first_payload, #ARGV do bytes = bytes + #ARGV[i] end
if backlog + count > backlog_max or bytes > backlog_max_bytes then
  redis.pcall("HINCRBY", metrics, "rejected_backpressure", count)
  return {"full", tostring(backlog)}
end
local remaining, reset = "", ""
if rate > 0 then
  tokens = tokens - count
  local full_ms = math.ceil((burst - tokens) * 1000 / rate)
  local spent = redis.pcall("SET", bucket, tostring(tokens) .. " " .. stamp_ms, "PX", full_ms + 1000)
  if type(spent) == "table" and spent.err then
    if string.sub(spent.err, 1, 3) == "OOM" then return {"oom", "0"} end
    return redis.error_reply(spent.err)
  end
  remaining, reset = tostring(math.floor(tokens)), tostring(math.ceil(full_ms / 1000))
end
local id_spec = entry_ms .. "-*"
local added = redis.pcall("XADD", stream, id_spec, "m", ARGV[first_payload])
if type(added) == "table" and added.err then
  if string.sub(added.err, 1, 3) == "OOM" then return {"oom", "0"} end
  id_spec = "*"
  redis.call("XADD", stream, id_spec, "m", ARGV[first_payload])
end
for i = first_payload + 1, #ARGV do
  redis.call("XADD", stream, id_spec, "m", ARGV[i])
end
if backlog == 0 then redis.pcall("XGROUP", "CREATE", stream, group, "0") end
if idem_record ~= "" then redis.call("SET", idem_key, idem_record, "EX", idem_ttl) end
local drain = "0"
if redis.call("SET", slot, "web", "NX", "EX", slot_ttl) then drain = "1" end
return {"staged", drain, remaining, reset}
"""


def shard_tag(index: int, shards: int) -> str:
    """The hash tag of shard `index` of `shards`: "s<index>", or "s<index>-<n>" for the first n
    that puts it in the index-th equal part of the cluster's slot space (so N shards land on
    N different masters of a cluster whose masters own equal slot ranges)."""
    low, high = index * REDIS_CLUSTER_HASH_SLOTS // shards, (index + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    candidate, n = f"s{index}", 0
    while not low <= key_slot(candidate.encode()) < high:
        candidate, n = f"s{index}-{n}", n + 1
    return candidate


@dataclass(frozen=True, slots=True)
class Shard:
    """The keys of one stream shard, all in one hash slot (its tag)."""

    index: int
    tag: str  # "{s0}": the hash tag, braces included
    stream: str
    metrics: str
    slot_prefix: str

    def slot(self, slot: int) -> str:
        return f"{self.slot_prefix}{slot}"


def _shards_build() -> tuple[Shard, ...]:
    count = settings.MESSY_STAGING_SHARDS
    built = []
    for index in range(count):
        tag = "{" + shard_tag(index, count) + "}"
        built.append(Shard(index, tag, key(tag, "stream"), key(tag, "metrics"), key(tag, "drain", "slot", "")))
    return tuple(built)


_shards: tuple[Shard, ...] = ()


@receiver(setting_changed)
def _shards_forget(setting: str, **_: Any) -> None:
    global _shards
    if setting in ("MESSY_STAGING_SHARDS", "REDIS_KEY_PREFIX"):
        _shards = ()


def shards() -> tuple[Shard, ...]:
    """Every shard, built once per process (the write path only indexes it)."""
    global _shards
    if not _shards:
        _shards = _shards_build()
    return _shards


def shard_of(subject: str) -> int:
    """The shard of a client's writes: by its quota subject (see the module's docstring).
    crc32 is stable across processes and hosts (Python's hash() is not)."""
    count = len(shards())
    return 0 if count == 1 else zlib.crc32(subject.encode("utf-8", "surrogatepass")) % count


def stream_key(shard: int = 0) -> str:
    return shards()[shard].stream


def dead_letter_key() -> str:
    """One dead-letter stream for every shard (its own slot on a cluster): rare, and listed,
    replayed and purged by entry id without naming a shard."""
    return key("stream", "dead")


def slot_key(slot: int, shard: int = 0) -> str:
    return shards()[shard].slot(slot)


def metrics_key(shard: int = 0) -> str:
    return shards()[shard].metrics


def workers_key() -> str:
    """The live ingest worker processes' heartbeats: a sorted set of "<name>=<processes>" by
    the Unix ms at which each expires."""
    return key("drain", "workers")


_STAGE = redis_script(_STAGE_SCRIPT)


def quota_key(subject: str, shard: int | None = None) -> str:
    """The token bucket of a client: a write API key's digest, or a client address (the
    two cannot collide: a digest holds neither "." nor ":"), in the client's shard."""
    tag = shards()[shard_of(subject) if shard is None else shard].tag
    return key(tag, "quota", subject)


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """What the stage script did: "staged", "replay" (idempotency hit), "quota" (the client's
    bucket holds too few tokens), "full" (past the backlog bound) or "oom" (Redis is over its
    maxmemory and refuses writes). With a quota: the tokens left (`remaining`, whole) and
    `reset`, the seconds until the bucket is full again ("staged") or holds enough for this
    request ("quota")."""

    result: str
    drain_needed: bool = False
    replay_record: bytes | None = None
    backlog: int = 0
    remaining: int | None = None
    reset: int | None = None


def stage(
    payloads: Sequence[bytes | str],
    entry_ms: int,
    idempotency_key: str = "",
    idempotency_record: bytes = b"",
    quota_subject: str = "",
    quota_rate: float = 0,
    quota_burst: int = 0,
    shard: int | None = None,
) -> StageOutcome:
    """Append payloads (JSON documents of messages whose ids carry the millisecond entry_ms)
    to the stream of `shard` (by default shard_of(quota_subject)) in one atomic step, spending
    one token per payload from the bucket of quota_subject (quota_rate 0: no quota).
    idempotency_key must be of the same shard (idempotency_key(..., shard))."""
    where = shards()[shard_of(quota_subject) if shard is None else shard]
    stream = where.stream
    keys = [
        stream,
        where.slot_prefix + "0",
        idempotency_key or stream,
        where.metrics,
        key(where.tag, "quota", quota_subject) if quota_rate else stream,
    ]
    args = [
        cached_settings.MESSY_BACKLOG_MAX,
        cached_settings.MESSY_BACKLOG_MAX_BYTES,
        cached_settings.MESSY_DRAIN_SLOT_TTL,
        cached_settings.MESSY_IDEMPOTENCY_TTL,
        idempotency_record,
        entry_ms,
        CONSUMER_GROUP,
        quota_rate,
        quota_burst,
        *payloads,
    ]
    try:
        result, detail, *quota = redis_script_run(_STAGE, keys, args)
    except redis.exceptions.OutOfMemoryError:  # refused before the script ran (EVALSHA's load)
        return StageOutcome("oom")
    if result == b"replay":
        return StageOutcome("replay", replay_record=detail)
    if result == b"quota":
        return StageOutcome("quota", remaining=int(detail), reset=int(quota[0]))
    if result == b"full":
        return StageOutcome("full", backlog=int(detail))
    if result == b"oom":
        return StageOutcome("oom")
    if quota and quota[0]:
        return StageOutcome("staged", drain_needed=detail == b"1", remaining=int(quota[0]), reset=int(quota[1]))
    return StageOutcome("staged", drain_needed=detail == b"1")


def idempotency_key(key_digest: str, client_key: str, shard: int = 0) -> str:
    """The record of an Idempotency-Key, scoped to the client: its write API key's digest
    (messages.clients.api_key_digest; never the key itself), or "anon"; in the shard of the
    request it guards."""
    return key(shards()[shard].tag, "idem", key_digest, client_key)


# An idempotency record holds only what a replay needs: a format byte, the request's
# fingerprint (a SHA-256 digest) and the 16 bytes of each accepted id, in order; the answer
# itself is rebuilt from them. So a record is at most 33 + 16 bytes per accepted message,
# however large the request or its answer was.
_RECORD_ACCEPTED = b"A"
_DIGEST_BYTES = 32


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    fingerprint: bytes  # payloads.fingerprint(): what "the same request" means
    ids: list[str]  # the accepted message ids, in the request's order


def idempotency_record_encode(fingerprint: bytes, message_ids: Iterable[str]) -> bytes:
    assert len(fingerprint) == _DIGEST_BYTES
    return b"".join((_RECORD_ACCEPTED, fingerprint, *(bytes.fromhex(i.replace("-", "")) for i in message_ids)))


def idempotency_record_decode(raw: bytes) -> IdempotencyRecord:
    body = raw[1 + _DIGEST_BYTES :]
    ids = [str(uuid.UUID(bytes=body[i : i + 16])) for i in range(0, len(body), 16)]
    return IdempotencyRecord(raw[1 : 1 + _DIGEST_BYTES], ids)


def consumer_name() -> str:
    """Unique per process, so a restarted worker never inherits a dead one's pending entries
    by name; they are reclaimed by idle time instead."""
    return f"{socket.gethostname()}:{os.getpid()}"


_BEST_EFFORT_LOG_SECONDS = 60.0
_best_effort_logged: dict[str, float] = {}


def _best_effort_failed(what: str) -> None:
    """Note a best-effort write Redis refused (over maxmemory): a warning at most once a minute
    per kind, since a full Redis refuses it on every batch until the drains empty it."""
    now = time.monotonic()
    if now - _best_effort_logged.get(what, -_BEST_EFFORT_LOG_SECONDS) >= _BEST_EFFORT_LOG_SECONDS:
        _best_effort_logged[what] = now
        logger.warning("Redis is over maxmemory and refused %s; carrying on without it", what)


def group_ensure(shard: int = 0) -> None:
    try:
        redis_client().xgroup_create(stream_key(shard), CONSUMER_GROUP, id="0", mkstream=True)
    except redis.exceptions.OutOfMemoryError:
        # Refused before Redis even looks: the group almost surely exists (the first sweep or
        # drain made it). If it does not, the read fails with NOGROUP and a later run retries.
        _best_effort_failed("creating the consumer group")
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True, slots=True)
class StagedEntry:
    entry_id: bytes
    payload: bytes


def _entries(raw: Sequence[Any], shard: int) -> list[StagedEntry]:
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
        redis_client().xack(stream_key(shard), CONSUMER_GROUP, *emptied)
    return entries


class BatchReader:
    """One drain run's reads: first this consumer's own pending entries (left by a crash or a
    database error, or parked when their dead-lettering was refused), then entries abandoned
    by dead consumers, then new ones.

    The own pending entries are read once per run, walking forward from the last one read,
    not from the start each time: an entry that stays pending (its dead letter refused by a
    full Redis) is then retried by the next run instead of being read again and again ahead
    of everything behind it."""

    def __init__(self, consumer: str, shard: int = 0) -> None:
        self.consumer = consumer
        self.shard = shard
        self._history: bytes | None = b"0"  # None once the own pending entries are read

    def claim(self, count: int) -> list[StagedEntry]:
        """The next batch, waiting up to MESSY_DRAIN_IDLE_WAIT_MS for new entries. (Under
        steady traffic the drain that is already running picks the next messages up, instead
        of exiting and making the next write publish a new task.)"""
        client = redis_client()
        stream = stream_key(self.shard)
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


def batch_claim(consumer: str, count: int, shard: int = 0) -> list[StagedEntry]:
    """One batch for `consumer`, as the first read of a drain run (BatchReader)."""
    return BatchReader(consumer, shard).claim(count)


def batch_ack(entry_ids: Sequence[bytes], stored: int, batch_lag_ms: int, shard: int = 0) -> None:
    """Delete and acknowledge stored entries, then count the batch; one round trip.

    Not a MULTI transaction: Redis over maxmemory refuses every MULTI, but still allows XDEL
    and XACK, and the drains must go on emptying a full stream. Both are idempotent. XDEL goes
    first: if the connection or Redis dies between the two, the entry is gone but still
    pending, and the next read of the pending entries returns it empty and acknowledges it
    (XAUTOCLAIM drops it by itself). The other order would leave a stored entry in the stream,
    acknowledged, never delivered again, counted in the backlog for ever.
    The counters are best-effort (refused while Redis is full)."""
    if not entry_ids:
        return
    stream, metrics = stream_key(shard), metrics_key(shard)
    pipe = redis_client().pipeline(transaction=False)
    pipe.xdel(stream, *entry_ids)
    pipe.xack(stream, CONSUMER_GROUP, *entry_ids)
    pipe.hincrby(metrics, "drain_batches", 1)
    pipe.hincrby(metrics, "drain_entries", len(entry_ids))
    pipe.hincrby(metrics, "stored", stored)
    pipe.hincrby(metrics, f"drain_batch_size_le_{batch_size_bucket(len(entry_ids))}", 1)
    pipe.hset(metrics, "drain_lag_ms", batch_lag_ms)
    results = pipe.execute(raise_on_error=False)
    for result in results[:2]:
        if isinstance(result, Exception):
            raise result
    _metrics_results_check(results[2:])


def _metrics_results_check(results: Iterable[Any]) -> None:
    for result in results:
        if isinstance(result, redis.exceptions.OutOfMemoryError):
            _best_effort_failed("a metrics update")
        elif isinstance(result, Exception):
            raise result


DRAIN_BATCH_BUCKETS = (1, 10, 100, 1000, 5000, 10000)


def batch_size_bucket(size: int) -> str:
    for bound in DRAIN_BATCH_BUCKETS:
        if size <= bound:
            return str(bound)
    return "inf"


def dead_letter(entry: StagedEntry, reason: str, shard: int = 0) -> bool:
    """Park an entry that can never be stored, so it does not block the ones behind it;
    return whether it was parked.

    When Redis is full it refuses the XADD to the dead-letter stream: the entry then stays
    pending (False), and the next drain run or a reclaim tries it again. Otherwise it is
    added to the dead letters, then deleted and acknowledged (as in batch_ack). Not a
    transaction, for the same reason: if the process dies between the two steps, the entry
    is in both streams and is dead-lettered a second time later; a replay of both stores it
    once (the insert is idempotent on the message id)."""
    client = redis_client()
    try:
        # No MAXLEN: an accepted message is never dropped silently (manage.py deadletters).
        client.xadd(dead_letter_key(), {"m": entry.payload, "reason": reason[:500]})
    except redis.exceptions.OutOfMemoryError:
        _best_effort_failed("a dead letter (the entry stays pending)")
        return False
    pipe = client.pipeline(transaction=False)
    pipe.xdel(stream_key(shard), entry.entry_id)
    pipe.xack(stream_key(shard), CONSUMER_GROUP, entry.entry_id)
    pipe.hincrby(metrics_key(shard), "dead_lettered", 1)
    results = pipe.execute(raise_on_error=False)
    for result in results[:2]:
        if isinstance(result, Exception):
            raise result
    _metrics_results_check(results[2:])
    return True


def _each_shard(command: Callable[[Any, Shard], Any]) -> list[Any]:
    """command(pipe, shard) for every shard, in one pipeline (one round trip on a
    single Redis; one per master on a cluster); the answers in shard order."""
    pipe = redis_client().pipeline(transaction=False)
    for shard in shards():
        command(pipe, shard)
    return list(pipe.execute())


def backlog(shard: int | None = None) -> int:
    """Entries staged in one shard, or in all of them."""
    if shard is not None:
        return int(redis_client().xlen(stream_key(shard)))
    if len(shards()) == 1:
        return int(redis_client().xlen(stream_key()))
    return sum(int(n) for n in _each_shard(lambda pipe, shard: pipe.xlen(shard.stream)))


def backlog_oldest_ms() -> int | None:
    """Unix ms at which the oldest staged message was accepted (its stream entry id is that
    millisecond), or None when nothing is staged. One XRANGE of one entry per shard."""
    firsts = _each_shard(lambda pipe, shard: pipe.xrange(shard.stream, min="-", max="+", count=1))
    oldest = [int(first[0][0].split(b"-")[0]) for first in firsts if first]
    return min(oldest) if oldest else None


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def entry_ms(entry_id: bytes | str) -> int:
    """The Unix millisecond a stream entry was added at (the first part of its id)."""
    return _stream_id(entry_id)[0]


def undelivered_exists(shard: int = 0) -> bool:
    """Whether the shard's stream holds entries not yet handed to any consumer of the group."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xinfo_stream(stream_key(shard))
    pipe.xinfo_groups(stream_key(shard))
    try:
        stream, groups = pipe.execute()
    except redis.ResponseError:  # no stream yet
        return False
    group = next((g for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode())), None)
    if group is None:
        return stream["length"] > 0
    return _stream_id(stream["last-generated-id"]) > _stream_id(group["last-delivered-id"])


def accepted_total() -> int:
    """Messages ever staged: the streams' own entries-added counters."""
    total = 0
    for shard in shards():
        with contextlib.suppress(redis.ResponseError):  # no stream yet
            total += int(redis_client().xinfo_stream(shard.stream)["entries-added"])
    return total


def slot_acquire(slot: int, holder: str, *, if_full: bool = False, shard: int = 0) -> bool:
    """Take a drain slot; when Redis is over maxmemory (it refuses SET) answer `if_full`:
    True where a drain must still run (the sweep, a drain going on), False where it is only an
    extra helper (fan-out), so a full Redis cannot multiply drains without bound."""
    try:
        return bool(redis_client().set(slot_key(slot, shard), holder, nx=True, ex=settings.MESSY_DRAIN_SLOT_TTL))
    except redis.exceptions.OutOfMemoryError:
        _best_effort_failed("taking a drain slot")
        return if_full


def slot_refresh(slot: int, shard: int = 0) -> None:
    """Best-effort: slots only limit how many drains run, and a full Redis refuses SET."""
    try:
        redis_client().set(slot_key(slot, shard), consumer_name(), ex=settings.MESSY_DRAIN_SLOT_TTL)
    except redis.exceptions.OutOfMemoryError:
        _best_effort_failed("refreshing a drain slot")


def slot_release(slot: int, shard: int = 0) -> None:
    redis_client().delete(slot_key(slot, shard))


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
    _metrics_results_check(results)


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


def legacy_stream_adopt(page: int = 1000) -> int:
    """Move what a version before shards left in its stream (<prefix>:stream:messages) onto
    shard 0's stream, then drop the old stream; return how many entries moved. The sweep calls
    it, so an upgrade with a backlog staged loses nothing. Each page is added to the new stream
    before it is deleted from the old one: a crash in between leaves it in both, and the insert
    (idempotent on the message id) stores it once; an entry an old drain still holds is stored
    once the same way. Refused by a full Redis: left for the next sweep."""
    if settings.MESSY_REDIS_CLUSTER:
        return 0  # the version before shards never ran on a cluster
    client = redis_client()
    legacy = key("stream", "messages")
    moved = 0
    while entries := client.xrange(legacy, min="-", max="+", count=page):
        pipe = client.pipeline(transaction=False)
        for _, fields in entries:
            if b"m" in fields:
                pipe.xadd(stream_key(), {"m": fields[b"m"]})
        try:
            pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            _best_effort_failed("moving the entries of the stream before shards")
            return moved
        client.xdel(legacy, *[entry_id for entry_id, _ in entries])
        moved += len(entries)
    if moved or client.exists(legacy):
        client.delete(legacy)  # empty now: its consumer group goes with it
        logger.warning("moved %d staged entries from the stream before shards to shard 0", moved)
    return moved


def metrics_snapshot() -> dict[str, int]:
    """The counters of every shard, summed (the drain lag: the largest)."""
    total: dict[str, int] = {}
    for raw in _each_shard(lambda pipe, shard: pipe.hgetall(shard.metrics)):
        for name, value in raw.items():
            field = name.decode()
            if field == "drain_lag_ms":
                total[field] = max(total.get(field, 0), int(value))
            else:
                total[field] = total.get(field, 0) + int(value)
    return total


def metrics_incr(name: str, amount: int = 1) -> None:
    redis_client().hincrby(metrics_key(), name, amount)


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
                    _best_effort_failed("pruning idle consumers")
                    return removed
                removed += 1
    return removed


# --- finding a staged message by its id ------------------------------------------------------

FIND_PAGE = 500


def entry_find(message_id: str, id_ms: int) -> bool:
    """Whether a shard's stream holds the message `message_id`, minted at Unix millisecond id_ms.

    Its entry was added at id_ms, or later when another host's clock was ahead (see the stage
    script), so the search walks forward from id_ms to id_ms + MESSY_CLOCK_SKEW_MS, a page at a
    time: usually one round trip, at worst the entries of that window."""
    return any(_entry_in(shard.stream, message_id, id_ms) for shard in shards())


def _entry_in(stream: str, message_id: str, id_ms: int) -> bool:
    client = redis_client()
    needle = message_id.encode()
    start, end = f"{id_ms}-0", f"{id_ms + settings.MESSY_CLOCK_SKEW_MS}-18446744073709551615"
    while True:
        entries: list[Any] = client.xrange(stream, min=start, max=end, count=FIND_PAGE)
        for _, fields in entries:
            document = fields.get(b"m") or b""
            # The id's text may also appear inside another message's text: parse to be sure.
            if needle in document and _username_and_id(document)[1] == message_id:
                return True
        if len(entries) < FIND_PAGE:
            return False
        start = "(" + entries[-1][0].decode()


# --- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    payload: bytes
    reason: str

    @property
    def dead_lettered_ms(self) -> int:
        return _stream_id(self.entry_id)[0]


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(entry_id.decode(), fields.get(b"m", b""), fields.get(b"reason", b"").decode("utf-8", "replace"))


def dead_letters_page(after: str = "-", count: int = 1000) -> list[DeadLetter]:
    """Dead letters, oldest first, from after the entry id `after` ("-": from the start)."""
    start = after if after == "-" else "(" + after
    return [_dead_letter(i, f) for i, f in redis_client().xrange(dead_letter_key(), min=start, max="+", count=count)]


def dead_letters_get(entry_ids: Sequence[str]) -> list[DeadLetter]:
    client = redis_client()
    found: list[DeadLetter] = []
    for entry_id in entry_ids:
        found.extend(_dead_letter(i, f) for i, f in client.xrange(dead_letter_key(), min=entry_id, max=entry_id))
    return found


def dead_letters_summary() -> tuple[int, int | None]:
    """(how many dead letters, Unix ms of the oldest or None), in one round trip."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xlen(dead_letter_key())
    pipe.xrange(dead_letter_key(), min="-", max="+", count=1)
    count, oldest = pipe.execute()
    return int(count), (_stream_id(oldest[0][0])[0] if oldest else None)


def dead_letter_restage(letter: DeadLetter) -> None:
    """Put a dead letter back on the staging stream (of shard 0: any shard drains it), then
    delete it from the dead letters. If the process dies in between it is in both; replaying
    it again stores it once (the insert is idempotent on the message id)."""
    client = redis_client()
    client.xadd(stream_key(), {"m": letter.payload})
    client.xdel(dead_letter_key(), letter.entry_id)


def dead_letters_delete(entry_ids: Sequence[str]) -> int:
    return int(redis_client().xdel(dead_letter_key(), *entry_ids)) if entry_ids else 0


# --- memcached copies -------------------------------------------------------------------------
# A copy of each staged payload answers "pending" status reads cheaply. Written without waiting
# for a reply (the "staged" cache is noreply): losing one costs nothing, the stream entry is the
# durable copy.


def copy_key(message_id: str) -> str:
    return f"staged:{message_id}"


# A web process sends its memcached copies in groups (project.deferred): one set_many of a
# group costs memcached and the web process about what one set of a single copy does, and at a
# write's cost that decides whether a write is cheaper than a Django view that does nothing
# (README "Benchmarks"). A copy is sent when the group is full, or once it has waited
# COPIES_MAX_AGE: before the next request, or while the web process waits for one. So at most
# about a request's duration after staging (copies_late_seconds() bounds it). Until then a status read
# finds the message in the stream, as it does after an eviction.
COPIES_GROUP = 16
COPIES_MAX_AGE = 0.02  # seconds


def _copies_send(keyed: dict[str, bytes]) -> None:
    copies = caches["staged"]
    # Straight to the cache backend's own pymemcache client (what its set_many() calls), with
    # keys made as it makes them (copies_store): its set_many() would first check each key for
    # characters memcached refuses, one character at a time in Python, and these keys are ours
    # (a prefix and a UUID). Noreply: nothing waits for memcached.
    client: Any = copies._cache  # type: ignore[attr-defined]
    client.set_many(keyed, copies.get_backend_timeout(), noreply=True)


def copies_late_seconds() -> int:
    """How long after staging a web process may still send a message's copy: WEB_TIMEOUT (the
    longest a request runs before gunicorn replaces its worker, dropping what it held), plus a
    margin."""
    return int(cached_settings.WEB_TIMEOUT) + 5


_copies = deferred.SendBuffer(_copies_send, COPIES_GROUP, COPIES_MAX_AGE)


def copies_store(payloads: Sequence[StagedPayload], documents: Sequence[bytes]) -> None:
    """Store the copies of staged payloads (documents: the same payloads, JSON-encoded); in the
    web server, with the next ones (see COPIES_GROUP)."""
    make_key = caches["staged"].make_key
    _copies.add({make_key(copy_key(p["id"])): document for p, document in zip(payloads, documents, strict=True)})


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
    """Delete every entry of `username` from `stream` (a stream_key(shard) or dead_letter_key()),
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


def pending_among(entry_ids: set[bytes], shard: int = 0) -> set[bytes]:
    """Which of these entries of the shard a drain has read and not yet acknowledged (it
    acknowledges only after the transaction storing them committed)."""
    low, high = min(entry_ids, key=_stream_id), max(entry_ids, key=_stream_id)
    try:
        pending: list[dict[str, Any]] = redis_client().xpending_range(
            stream_key(shard), CONSUMER_GROUP, min=low, max=high, count=len(entry_ids) + 100_000
        )
    except redis.ResponseError:
        return set()  # no consumer group yet: nothing was ever read, nothing is in flight
    return entry_ids & {item["message_id"] for item in pending}
