"""The stream shards: their hash tags and keys, and which shard a client writes to.

# Documented in docs/staging.md ("Shards").
"""

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from project.redis import key, redis_client


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


def shard_of(subject: str) -> Shard:
    """The shard of a client's writes: by its quota subject (docs/staging.md, "Shards").
    crc32 is stable across processes and hosts (Python's hash() is not)."""
    every = shards()
    return every[0] if len(every) == 1 else every[zlib.crc32(subject.encode("utf-8", "surrogatepass")) % len(every)]


def dead_letter_key() -> str:
    """One dead-letter stream for every shard (its own slot on a cluster): rare, and listed,
    replayed and purged by entry id without naming a shard."""
    return key("stream", "dead")


def workers_key() -> str:
    """The live ingest worker processes' heartbeats: a sorted set of "<name>=<processes>" by
    the Unix ms at which each expires."""
    return key("drain", "workers")


def quota_key(subject: str) -> str:
    """The token bucket of a client: a write API key's digest, or a client address (the
    two cannot collide: a digest holds neither "." nor ":"), in the client's shard."""
    return key(shard_of(subject).tag, "quota", subject)


def each_shard(command: Callable[[Any, Shard], Any]) -> list[Any]:
    """command(pipe, shard) for every shard, in one pipeline (one round trip on a
    single Redis; one per master on a cluster); the answers in shard order."""
    pipe = redis_client().pipeline(transaction=False)
    for shard in shards():
        command(pipe, shard)
    return list(pipe.execute())


# How long a marker outlives a drain that never deleted it (a crash, an erasure, a dead letter).
MARKER_TTL = 7 * 24 * 3600


def marker_key(shard: Shard, message_id: str) -> str:
    """The marker naming a staged message's entry in its shard's stream (the stage script writes
    it, the drain deletes it with the entry): what a status read looks up."""
    return key(shard.tag, "at", message_id)
