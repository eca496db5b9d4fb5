"""The stage script: one atomic Redis step per write (replay, quota, backpressure, append)."""

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from messages.staging.shards import Shard
from messages.staging.stream import CONSUMER_GROUP
from project.conf import cached_settings
from project.redis import key, redis_script, redis_script_run

# One atomic step per write: replay, quota, backpressure, append, "is a drain scheduled?".
# Documented in docs/staging.md ("The stage script"): its contract, keys and a full Redis.
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


_STAGE = redis_script(_STAGE_SCRIPT)


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
    *,
    shard: Shard,
    idempotency_key: str = "",
    idempotency_record: bytes = b"",
    quota_subject: str = "",
    quota_rate: float = 0,
    quota_burst: int = 0,
) -> StageOutcome:
    """Append payloads (JSON documents of messages whose ids carry the millisecond entry_ms)
    to the stream of `shard` (shard_of(quota_subject)) in one atomic step, spending one token
    per payload from the bucket of quota_subject (quota_rate 0: no quota). idempotency_key
    must be of the same shard (idempotency_key(shard, ...))."""
    where = shard
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
