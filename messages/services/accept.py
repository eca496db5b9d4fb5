"""Accepting a write: its messages staged in one atomic step, with a result for the caller.

# Documented in docs/staging.md ("Accept").
"""

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field

import orjson
import redis

from messages import copies, staging
from messages.clients import Quota
from messages.errors import (
    BacklogFull,
    BacklogShareFull,
    IdempotencyBudgetSpent,
    IdempotencyConflict,
    MessageIdConflict,
    QuotaExceeded,
    StagingFull,
    StagingUnavailable,
)
from messages.ids import client_message_id, message_id_from
from messages.services.drain import drain_schedule
from messages.staged import staged_payload
from messages.validation import MessageInput

logger = logging.getLogger(__name__)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__.
@dataclass(slots=True)
class WriteRequest:
    """A write, parsed once (messages.views): what messages_accept needs to accept it."""

    inputs: list[MessageInput]  # the valid messages, in the request's order
    client: str = ""  # scope of ids and Idempotency-Keys (messages.clients.client_scope)
    idempotency_key: str = ""
    fingerprint: bytes = b""  # payloads.fingerprint(): what "the same request" means
    quota_subject: str = ""
    quota: Quota | None = None


@dataclass(slots=True)
class Accepted:
    """What messages_accept did: the accepted ids in order, whether they were answered from an
    idempotency record, and the client's quota after the request (None when it has none)."""

    ids: list[str] = field(default_factory=list)
    replayed: bool = False
    quota_remaining: int | None = None
    quota_reset: int | None = None


def messages_accept(request: WriteRequest) -> Accepted:
    """Stage a write's messages in one atomic Redis step (docs/staging.md, "Accept").

    A message with the client's own id is stored under an id derived from both (so sent twice,
    stored once; sent again with other content while its record lives, refused). With an
    Idempotency-Key, the record of the request is staged in that same step; a retry with the
    same fingerprint is answered from it, with nothing staged again. Each message counts in the
    client's quota and share of the backlog (docs/fairness.md).

    Raises QuotaExceeded, BacklogShareFull (the client holds its share of the backlog),
    BacklogFull, StagingFull (Redis over maxmemory), IdempotencyConflict (the key was used for
    another request), MessageIdConflict (an own id was used for other content),
    IdempotencyBudgetSpent (a new record is over budget) or StagingUnavailable (Redis
    unreachable).
    """
    inputs, client, quota = request.inputs, request.client, request.quota
    rate = quota.rate if quota is not None else 0
    if quota is not None and rate and len(inputs) > quota.burst:
        # Never admissible, however long the client waits: the answer says to split the batch.
        raise QuotaExceeded(quota, quota.burst, max(1, math.ceil(quota.burst / rate)))
    # One millisecond for the whole request: the ids', the stream entries' and the accepted time.
    accepted_at = time.time_ns() // 1_000_000
    staged = [
        staged_payload(
            message_id_from(accepted_at, os.urandom(10))
            if item.client_id is None
            else client_message_id(client, item.client_id),
            item,
            accepted_at,
        )
        for item in inputs
    ]
    encoded = [orjson.dumps(payload) for payload in staged]
    shard = staging.shard_of(request.quota_subject)
    idempotency_key, fingerprint = request.idempotency_key, request.fingerprint
    try:
        outcome = staging.stage(
            encoded,
            accepted_at,
            shard=shard,
            idempotency_key=staging.idempotency_key(shard, client, idempotency_key) if idempotency_key else "",
            idempotency_record=(
                staging.idempotency_record_encode(fingerprint, (p["id"] for p in staged)) if idempotency_key else b""
            ),
            quota_subject=request.quota_subject,
            quota_rate=rate,
            quota_burst=quota.burst if quota is not None else 0,
            message_ids=[p["id"] for p in staged],
            client_ids=[b"" if item.client_id is None else _content_digest(item) for item in inputs],
        )
    except redis.exceptions.OutOfMemoryError:
        raise StagingFull() from None
    except redis.RedisError as exc:
        raise StagingUnavailable() from exc
    if outcome.result == "replay":
        assert outcome.replay_record is not None
        record = staging.idempotency_record_decode(outcome.replay_record)
        if record.fingerprint != fingerprint or len(record.ids) != len(inputs):
            raise IdempotencyConflict()
        return Accepted(record.ids, replayed=True)
    if outcome.result == "quota":
        assert quota is not None and outcome.remaining is not None and outcome.reset is not None
        raise QuotaExceeded(quota, outcome.remaining, outcome.reset)
    if outcome.result == "full":
        raise BacklogFull(outcome.backlog)
    if outcome.result == "oom":
        raise StagingFull()
    if outcome.result == "share":
        raise BacklogShareFull()
    if outcome.result == "conflict":
        raise MessageIdConflict(outcome.conflicts)
    if outcome.result in ("idem_client", "idem_full"):
        raise IdempotencyBudgetSpent(outcome.result == "idem_full", outcome.reset or 1)
    ids = [payload["id"] for payload in staged]
    copies.copies_store(ids)
    if outcome.drain_needed:
        try:
            drain_schedule(shard, 0)
        except redis.RedisError as exc:  # the slot's release, after the broker refused the task
            raise StagingUnavailable() from exc
    return Accepted(ids, False, outcome.remaining, outcome.reset)


def _content_digest(item: MessageInput) -> bytes:
    """What "the same message" means for a resend under the client's own id: its fields."""
    fields = (item.username, item.city, item.state, item.message, item.sent_at)
    return hashlib.sha256(orjson.dumps(fields)).digest()[:16]


def messages_rejected_count(count: int) -> None:
    """Count messages refused by validation, for /metrics. Never fails the request."""
    try:
        staging.metrics_incr(staging.shards()[0], "rejected_invalid", count)
    except Exception:
        logger.warning("could not count rejected messages", exc_info=True)
