"""The stage script: one atomic Redis step per write (replay, quota, backpressure, append)."""

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from messages.staging.shards import shard_of, shards
from messages.staging.stream import CONSUMER_GROUP
from project.conf import cached_settings
from project.redis import key, redis_script, redis_script_run

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
