"""The durable staging area: Redis streams in shards, one consumer group each, and a few small
keys. Only the messages app touches them; its services call this package.

One module per concern: shards (keys), script (the stage step), idempotency, stream (group,
batch reads, acks), slots (drain slots, heartbeats), figures, dead_letters, find, erasure.
# Documented in docs/staging.md
"""

from messages.staging.dead_letters import (
    DeadLetter,
    dead_letter,
    dead_letter_restage,
    dead_letters_delete,
    dead_letters_get,
    dead_letters_page,
    dead_letters_summary,
)
from messages.staging.erasure import SCAN_COUNT, pending_among, stream_user_delete
from messages.staging.figures import DRAIN_BATCH_BUCKETS, batch_size_bucket, metrics_incr, metrics_snapshot
from messages.staging.find import entry_find
from messages.staging.idempotency import (
    IdempotencyRecord,
    idempotency_key,
    idempotency_record_decode,
    idempotency_record_encode,
)
from messages.staging.script import StageOutcome, stage
from messages.staging.shards import (
    MARKER_TTL,
    Shard,
    dead_letter_key,
    marker_key,
    quota_key,
    shard_of,
    shard_tag,
    shards,
    workers_key,
)
from messages.staging.slots import (
    WORKER_HEARTBEAT_SECONDS,
    WORKER_HEARTBEAT_TTL_MS,
    drain_capacity,
    slot_acquire,
    slot_refresh,
    slot_release,
    worker_forget,
    worker_heartbeat,
)
from messages.staging.stream import (
    CONSUMER_GROUP,
    BatchReader,
    StagedEntry,
    accepted_total,
    backlog,
    backlog_oldest_ms,
    batch_ack,
    batch_claim,
    consumer_name,
    consumers_prune,
    entry_ms,
    group_ensure,
    undelivered_exists,
)
from project.redis import redis_client

__all__ = [
    "CONSUMER_GROUP",
    "DRAIN_BATCH_BUCKETS",
    "MARKER_TTL",
    "SCAN_COUNT",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_HEARTBEAT_TTL_MS",
    "BatchReader",
    "DeadLetter",
    "IdempotencyRecord",
    "Shard",
    "StageOutcome",
    "StagedEntry",
    "accepted_total",
    "backlog",
    "backlog_oldest_ms",
    "batch_ack",
    "batch_claim",
    "batch_size_bucket",
    "consumer_name",
    "consumers_prune",
    "dead_letter",
    "dead_letter_key",
    "dead_letter_restage",
    "dead_letters_delete",
    "dead_letters_get",
    "dead_letters_page",
    "dead_letters_summary",
    "drain_capacity",
    "entry_find",
    "entry_ms",
    "group_ensure",
    "idempotency_key",
    "idempotency_record_decode",
    "idempotency_record_encode",
    "marker_key",
    "metrics_incr",
    "metrics_snapshot",
    "pending_among",
    "quota_key",
    "redis_client",
    "shard_of",
    "shard_tag",
    "shards",
    "slot_acquire",
    "slot_refresh",
    "slot_release",
    "stage",
    "stream_user_delete",
    "undelivered_exists",
    "worker_forget",
    "worker_heartbeat",
    "workers_key",
]
