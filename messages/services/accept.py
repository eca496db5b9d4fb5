"""Accepting a write: its messages staged in one atomic step, with a result for the caller."""

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from messages import copies, staging
from messages.clients import Quota
from messages.ids import client_message_id, message_id_from
from messages.services.drain import drain_schedule
from messages.staged import StagedPayload
from messages.validation import MessageInput

logger = logging.getLogger(__name__)


def staged_payload(message_id: str, item: MessageInput, accepted_at: int) -> StagedPayload:
    payload: StagedPayload = {
        "id": message_id,
        "username": item.username,
        "city": item.city,
        "state": item.state,
        "message": item.message,
        "accepted_at": accepted_at,
    }
    if item.sent_at is not None:
        payload["sent_at"] = item.sent_at
    return payload


class BacklogFull(Exception):
    def __init__(self, backlog: int) -> None:
        super().__init__(f"staged backlog is {backlog}")
        self.backlog = backlog


class StagingFull(Exception):
    """The staging Redis is over its maxmemory and refuses writes (the drains still empty it)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class QuotaExceeded(Exception):
    """The client's token bucket holds fewer tokens than the request has messages."""

    def __init__(self, quota: Quota, remaining: int, retry_after: int) -> None:
        super().__init__(f"{remaining} of {quota.burst} tokens left")
        self.quota = quota
        self.remaining = remaining
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Staged:
    """The client's answer, and its quota after the request (None when it has none)."""

    body: dict[str, Any]
    quota_remaining: int | None = None
    quota_reset: int | None = None


# One mapping per accepted message, in order, each with its "id": the staged payloads when
# the messages were just staged, {"id": ...} when a retry is answered from an idempotency record.
Accepted = Sequence[Mapping[str, Any]]


def messages_stage(
    inputs: Sequence[MessageInput], answer: Callable[[Accepted], dict[str, Any]], **options: Any
) -> dict[str, Any]:
    """messages_accept's answer alone (for callers that have no quota to report)."""
    return messages_accept(inputs, answer, **options).body


def messages_accept(
    inputs: Sequence[MessageInput],
    answer: Callable[[Accepted], dict[str, Any]],
    *,
    client: str = "anon",
    idempotency_key: str = "",
    fingerprint: bytes = b"",
    quota_subject: str = "",
    quota: Quota | None = None,
) -> Staged:
    """Accept validated messages and return the client's answer, built by `answer`.

    `client`: the scope of the client's Idempotency-Keys and message ids, its write API key's
    digest (messages.clients.api_key_digest) or "anon". A message with the client's own id is
    stored under an id derived from both (messages.ids.client_message_id): sent twice, it is
    stored once and answered with the same id. Each message spends a token of quota_subject's
    bucket (`quota`; none when None or its rate is 0), in the same atomic Redis step.

    The messages become durable entries of the Redis stream, with a copy in memcached. With an
    Idempotency-Key, a record of the request (its fingerprint, from payloads.fingerprint, and the
    accepted ids) is stored in the same atomic Redis step as the messages, so a key never exists
    without its messages or the other way round; a retry with the same fingerprint gets the
    answer rebuilt from those ids (marked "replayed"), with nothing staged again.

    Raises QuotaExceeded when the client is over its quota, BacklogFull past the backlog bound,
    StagingFull when Redis is over its maxmemory, IdempotencyConflict when the key was used for
    a different request, and redis.RedisError when Redis is unreachable.
    """
    rate = quota.rate if quota is not None else 0
    if quota is not None and rate and len(inputs) > quota.burst:
        # Never admissible, however long the client waits: the answer says to split the batch.
        raise QuotaExceeded(quota, quota.burst, max(1, math.ceil(quota.burst / rate)))
    # One millisecond for the whole request: the ids' time, the stream entries' (see
    # staging.entry_find) and the accepted time.
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
    shard = staging.shard_of(quota_subject)
    outcome = staging.stage(
        encoded,
        accepted_at,
        idempotency_key=staging.idempotency_key(client, idempotency_key, shard) if idempotency_key else "",
        idempotency_record=(
            staging.idempotency_record_encode(fingerprint, (p["id"] for p in staged)) if idempotency_key else b""
        ),
        quota_subject=quota_subject,
        quota_rate=rate,
        quota_burst=quota.burst if quota is not None else 0,
        shard=shard,
    )
    if outcome.result == "replay":
        assert outcome.replay_record is not None
        record = staging.idempotency_record_decode(outcome.replay_record)
        if record.fingerprint != fingerprint or len(record.ids) != len(inputs):
            raise IdempotencyConflict()
        return Staged({**answer([{"id": message_id} for message_id in record.ids]), "replayed": True})
    if outcome.result == "quota":
        assert quota is not None and outcome.remaining is not None and outcome.reset is not None
        raise QuotaExceeded(quota, outcome.remaining, outcome.reset)
    if outcome.result == "full":
        raise BacklogFull(outcome.backlog)
    if outcome.result == "oom":
        raise StagingFull()
    copies.copies_store(staged, encoded)
    if outcome.drain_needed:
        drain_schedule(0, shard)
    return Staged(answer(staged), outcome.remaining, outcome.reset)


def messages_rejected_count(count: int) -> None:
    """Count messages refused by validation, for /metrics. Never fails the request."""
    try:
        staging.metrics_incr("rejected_invalid", count)
    except Exception:
        logger.warning("could not count rejected messages", exc_info=True)
