"""The stage script: one atomic Redis step per write (replay, quota, the client's share of the
backlog, its own ids, idempotency budgets, backpressure, append, status markers).

# Documented in docs/staging.md ("The stage script") and docs/fairness.md (the bounds).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from messages.staging.shards import MARKER_TTL, Shard, marker_key, shards
from messages.staging.stream import CONSUMER_GROUP
from project.redis import key, redis_script, redis_script_run

# One atomic step per write: replay, quota, share, own ids, budgets, backpressure, append, markers,
# "is a drain scheduled?". Its contract, keys and a full Redis: docs/staging.md ("The stage
# script"); the client's share, the idempotency budgets and the markers: docs/fairness.md.
# ARGV: fifteen values fixed per shard and settings (_StageStatic), then the request's
# idem_record ("": no Idempotency-Key), entry_ms, rate, burst and count, then the payloads, their
# message ids, and per payload the digest of one sent with the client's own id ("" otherwise).
_STAGE_SCRIPT = """
local stream, slot, idem_key, metrics, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idem_client, idem_total = KEYS[6], KEYS[7]
local backlog_max, backlog_max_bytes, slot_ttl, idem_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local group, share_n, share_b = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local idem_client_max, idem_total_max, record_overhead = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local marker_prefix, marker_ttl, marker_bytes, cid_prefix = ARGV[11], ARGV[12], tonumber(ARGV[13]), ARGV[14]
local state_ttl_ms = tonumber(ARGV[15])
local idem_record, entry_ms, rate, burst = ARGV[16], ARGV[17], tonumber(ARGV[18]), tonumber(ARGV[19])
local count = tonumber(ARGV[20])
local first_payload = 21
local first_id, first_cid = first_payload + count, first_payload + 2 * count
if idem_record ~= "" then
  local existing = redis.call("GET", idem_key)
  if existing then return {"replay", existing} end
end
local now_ms = tonumber(entry_ms)
local tokens, stamp_ms, last_ms, mark, a_n, a_b, b_n, b_b = burst, now_ms, 0, 0, 0, 0, 0, 0
local tracked = rate > 0 or share_n > 0
if tracked then
  local state = redis.call("GET", bucket)
  if state then
    local f = {}
    for word in string.gmatch(state, "%S+") do f[#f + 1] = tonumber(word) end
    stamp_ms, last_ms = math.max(now_ms, f[2]), f[2]
    if rate > 0 then tokens = math.min(burst, f[1] + math.max(0, now_ms - f[2]) * rate / 1000) end
    mark, a_n, a_b, b_n, b_b = f[3] or 0, f[4] or 0, f[5] or 0, f[6] or 0, f[7] or 0
  end
  if rate > 0 and tokens < count then
    local wait = math.ceil((math.min(count, burst) - tokens) / rate)
    return {"quota", tostring(math.floor(tokens)), tostring(math.max(1, wait))}
  end
end
local bytes_in = 0
for i = first_payload, first_id - 1 do bytes_in = bytes_in + #ARGV[i] end
local backlog = redis.call("XLEN", stream)
if share_n > 0 then
  if backlog == 0 then a_n, a_b, b_n, b_b = 0, 0, 0, 0 end
  if a_n == 0 then a_n, a_b, b_n, b_b, mark = b_n, b_b, 0, 0, last_ms end
  if a_n > 0 and ((a_n + b_n + count) * 2 > share_n or (a_b + b_b + bytes_in) * 2 > share_b) then
    local first = redis.call("XRANGE", stream, "-", "+", "COUNT", 1)[1]
    local oldest = first and tonumber(string.match(first[1], "^(%d+)")) or math.huge
    if oldest > last_ms then
      a_n, a_b, b_n, b_b = 0, 0, 0, 0
    elseif oldest > mark then
      a_n, a_b, b_n, b_b, mark = b_n, b_b, 0, 0, last_ms
    end
  end
  local held_n, held_b = a_n + b_n, a_b + b_b
  if held_n > 0 and (held_n + count > share_n or held_b + bytes_in > share_b) then
    return {"share", tostring(held_n)}
  end
end
local cids, conflicts = {}, {}
for i = 0, count - 1 do
  local digest = ARGV[first_cid + i]
  if digest ~= "" then
    local cid_key = cid_prefix .. ARGV[first_id + i]
    local existing = redis.call("GET", cid_key)
    if not existing then
      cids[#cids + 1] = {cid_key, digest}
    elseif existing ~= digest then
      conflicts[#conflicts + 1] = tostring(i)
    end
  end
end
if #conflicts > 0 then return {"conflict", table.concat(conflicts, " ")} end
local idem_cost = 0
if idem_record ~= "" then idem_cost = #idem_key + #idem_record + record_overhead end
for _, cid in ipairs(cids) do idem_cost = idem_cost + #cid[1] + #cid[2] + record_overhead end
if idem_cost > 0 then
  if idem_cost + tonumber(redis.call("GET", idem_client) or "0") > idem_client_max then
    return {"idem_client", tostring(math.max(1, redis.call("TTL", idem_client)))}
  end
  if idem_cost + tonumber(redis.call("GET", idem_total) or "0") > idem_total_max then
    return {"idem_full", tostring(math.max(1, redis.call("TTL", idem_total)))}
  end
end
local bytes = (backlog + count) * marker_bytes + bytes_in
if backlog > 0 then bytes = bytes + (redis.call("MEMORY", "USAGE", stream) or 0) end
if backlog + count > backlog_max or bytes > backlog_max_bytes then
  redis.pcall("HINCRBY", metrics, "rejected_backpressure", count)
  return {"full", tostring(backlog)}
end
local remaining, reset = "", ""
if tracked then
  local keep_ms = state_ttl_ms
  if rate > 0 then
    tokens = tokens - count
    local full_ms = math.ceil((burst - tokens) * 1000 / rate)
    remaining, reset = tostring(math.floor(tokens)), tostring(math.ceil(full_ms / 1000))
    if share_n <= 0 then keep_ms = full_ms + 1000 end
  end
  local kept = table.concat({tokens, stamp_ms, mark, a_n, a_b, b_n + count, b_b + bytes_in}, " ")
  local spent = redis.pcall("SET", bucket, kept, "PX", keep_ms)
  if type(spent) == "table" and spent.err then
    if string.sub(spent.err, 1, 3) == "OOM" then return {"oom", "0"} end
    return redis.error_reply(spent.err)
  end
end
local id_spec = entry_ms .. "-*"
local added = redis.pcall("XADD", stream, id_spec, "m", ARGV[first_payload])
if type(added) == "table" and added.err then
  if string.sub(added.err, 1, 3) == "OOM" then return {"oom", "0"} end
  id_spec = "*"
  added = redis.call("XADD", stream, id_spec, "m", ARGV[first_payload])
end
redis.call("SET", marker_prefix .. ARGV[first_id], added, "EX", marker_ttl)
for i = 1, count - 1 do
  added = redis.call("XADD", stream, id_spec, "m", ARGV[first_payload + i])
  redis.call("SET", marker_prefix .. ARGV[first_id + i], added, "EX", marker_ttl)
end
if backlog == 0 then redis.pcall("XGROUP", "CREATE", stream, group, "0") end
if idem_record ~= "" then redis.call("SET", idem_key, idem_record, "EX", idem_ttl) end
for _, cid in ipairs(cids) do redis.call("SET", cid[1], cid[2], "EX", idem_ttl) end
if idem_cost > 0 then
  for _, counter in ipairs({idem_client, idem_total}) do
    if redis.call("INCRBY", counter, idem_cost) == idem_cost then redis.call("EXPIRE", counter, idem_ttl) end
  end
end
local drain = "0"
if redis.call("SET", slot, "web", "NX", "EX", slot_ttl) then drain = "1" end
return {"staged", drain, remaining, reset}
"""


_STAGE = redis_script(_STAGE_SCRIPT)


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """What the stage script did: "staged", "replay" (idempotency hit), "quota" (the client's
    bucket holds too few tokens), "share" (the client holds its share of the backlog),
    "conflict" (a message id of the client's own was accepted with other content: `conflicts`,
    their positions), "idem_client" / "idem_full" (the client's or the shard's idempotency
    budget is spent: `reset`, seconds until it renews), "full" (past the backlog bound) or "oom"
    (Redis is over its maxmemory and refuses writes). With a quota: the tokens left (`remaining`,
    whole) and `reset`, the seconds until the bucket is full again ("staged") or holds enough for
    this request ("quota")."""

    result: str
    drain_needed: bool = False
    replay_record: bytes | None = None
    backlog: int = 0
    remaining: int | None = None
    reset: int | None = None
    conflicts: tuple[int, ...] = ()


# What a record costs Redis beyond its key and value, and what a status marker costs in all:
# estimates the budgets charge (measured: docs/fairness.md).
IDEMPOTENCY_RECORD_OVERHEAD = 200
MARKER_BYTES = 240
# How long a client's count of its backlog outlives its last write.
CLIENT_STATE_TTL_MS = 3600 * 1000


@dataclass(frozen=True, slots=True)
class _StageStatic:
    """What the stage script is given on every call that depends only on the shard and the
    settings: built once, its arguments encoded once (the write path's hot loop)."""

    slot: str
    idem_total: str
    shared: bool  # whether clients' shares of the backlog are counted
    args: tuple[bytes, ...]


_stage_statics: dict[tuple[int, bool], _StageStatic] = {}


@receiver(setting_changed)
def _stage_statics_forget(**_: Any) -> None:
    _stage_statics.clear()


def _stage_static(where: Shard, has_subject: bool) -> _StageStatic:
    static = _stage_statics.get((where.index, has_subject))
    if static is None:
        share = settings.MESSY_BACKLOG_CLIENT_SHARE if has_subject else 0
        values = (
            settings.MESSY_BACKLOG_MAX,
            settings.MESSY_BACKLOG_MAX_BYTES,
            settings.MESSY_DRAIN_SLOT_TTL,
            settings.MESSY_IDEMPOTENCY_TTL,
            CONSUMER_GROUP,
            int(settings.MESSY_BACKLOG_MAX * share),
            int(settings.MESSY_BACKLOG_MAX_BYTES * share),
            settings.MESSY_IDEMPOTENCY_CLIENT_BYTES,
            settings.MESSY_IDEMPOTENCY_MAX_BYTES // len(shards()),
            IDEMPOTENCY_RECORD_OVERHEAD,
            marker_key(where, ""),
            MARKER_TTL,
            MARKER_BYTES,
            key(where.tag, "cid", ""),
            CLIENT_STATE_TTL_MS,
        )
        static = _StageStatic(
            where.slot_prefix + "0",
            key(where.tag, "idem-budget"),
            share > 0,
            tuple(str(value).encode() for value in values),
        )
        _stage_statics[(where.index, has_subject)] = static
    return static


def stage(
    payloads: Sequence[bytes | str],
    entry_ms: int,
    *,
    shard: Shard,
    idempotency_key: str = "",
    idempotency_record: bytes = b"",
    quota_subject: str = "",
    quota_rate: float = 0,
    quota_burst: int = 0,
    message_ids: Sequence[str] = (),
    client_ids: Sequence[bytes] = (),
) -> StageOutcome:
    """Append payloads (JSON documents of messages whose ids, `message_ids`, carry the millisecond
    entry_ms) to the stream of `shard` (shard_of(quota_subject)) in one atomic step, spending one
    token per payload from the bucket of quota_subject (quota_rate 0: no quota) and counting them
    in its share of the backlog (MESSY_BACKLOG_CLIENT_SHARE). `client_ids`: per payload, a digest
    of its content when its id is the client's own (b"" otherwise), so a resend with other
    content is refused. idempotency_key must be of the same shard (idempotency_key(shard, ...))."""
    where = shard
    stream = where.stream
    count = len(payloads)
    if len(message_ids) != count:
        message_ids = [orjson.loads(payload)["id"] for payload in payloads]
    static = _stage_static(where, bool(quota_subject))
    records = bool(idempotency_key) or any(client_ids)
    keys = [
        stream,
        static.slot,
        idempotency_key or stream,
        where.metrics,
        key(where.tag, "quota", quota_subject) if quota_rate or static.shared else stream,
        key(where.tag, "idem-budget", quota_subject) if records else stream,
        static.idem_total if records else stream,
    ]
    args = [
        *static.args,
        idempotency_record,
        entry_ms,
        quota_rate,
        quota_burst,
        count,
        *payloads,
        *message_ids,
        *(client_ids or [b""] * count),
    ]
    try:
        result, detail, *quota = redis_script_run(_STAGE, keys, args)
    except redis.exceptions.OutOfMemoryError:  # refused before the script ran (EVALSHA's load)
        return StageOutcome("oom")
    if result == b"staged":
        if quota and quota[0]:
            return StageOutcome("staged", drain_needed=detail == b"1", remaining=int(quota[0]), reset=int(quota[1]))
        return StageOutcome("staged", drain_needed=detail == b"1")
    if result == b"replay":
        return StageOutcome("replay", replay_record=detail)
    if result == b"quota":
        return StageOutcome("quota", remaining=int(detail), reset=int(quota[0]))
    if result == b"full":
        return StageOutcome("full", backlog=int(detail))
    if result == b"share":
        return StageOutcome("share", backlog=int(detail))
    if result == b"conflict":
        return StageOutcome("conflict", conflicts=tuple(int(i) for i in detail.split()))
    if result in (b"idem_client", b"idem_full"):
        return StageOutcome(result.decode(), reset=int(detail))
    return StageOutcome("oom")
