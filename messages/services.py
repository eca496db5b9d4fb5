"""Functions that change the state of messages: accept (stage), persist, drain."""

import csv
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import caches
from django.db import DataError, IntegrityError, connection, transaction

from messages import staging
from messages.validation import MessageInput
from stats.services import rollups_add_inserted

logger = logging.getLogger(__name__)


def message_id_new() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits.

    Time-ordered ids keep inserts at the right edge of the primary-key index.
    """
    return uuid.UUID(message_id_text())


def message_id_text() -> str:
    """message_id_new() in its canonical text form, without building a UUID object (the
    write path mints one per message)."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = rand >> 68, rand & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def payload_cache_key(message_id: str) -> str:
    return f"staged:{message_id}"


@dataclass(frozen=True, slots=True)
class StagedMessage:
    id: str
    payload: dict[str, Any]


class BacklogFull(Exception):
    def __init__(self, backlog: int) -> None:
        super().__init__(f"staged backlog is {backlog}")
        self.backlog = backlog


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


def messages_stage(
    inputs: Sequence[MessageInput],
    answer: Callable[[list[StagedMessage]], dict[str, Any]],
    *,
    idempotency_key: str = "",
    fingerprint: str = "",
) -> dict[str, Any]:
    """Accept validated messages and return the client's answer, built by `answer`.

    The messages become durable entries of the Redis stream, with a copy in memcached. With an
    Idempotency-Key, the answer is stored in the same atomic Redis step as the messages, so a
    key never exists without its messages or the other way round, and a retry gets the first
    answer back (marked "replayed") with nothing staged again.

    Raises BacklogFull past the backlog bound, IdempotencyConflict when the key was used for
    a different request, and redis.RedisError when Redis is unreachable.
    """
    accepted_at = int(time.time() * 1000)
    messages = []
    for item in inputs:
        message_id = message_id_text()
        payload = {
            "id": message_id,
            "username": item.username,
            "city": item.city,
            "state": item.state,
            "message": item.message,
            "accepted_at": accepted_at,
        }
        messages.append(StagedMessage(message_id, payload))
    body = answer(messages)
    record = json.dumps({"fingerprint": fingerprint, "answer": body}) if idempotency_key else ""
    encoded = [orjson.dumps(message.payload) for message in messages]
    outcome = staging.stage(
        encoded,
        idempotency_key=idempotency_key,
        idempotency_record=record,
    )
    if outcome.result == "replay":
        assert outcome.replay_record is not None
        first = json.loads(outcome.replay_record)
        if first["fingerprint"] != fingerprint:
            raise IdempotencyConflict()
        return {**first["answer"], "replayed": True}
    if outcome.result == "full":
        raise BacklogFull(outcome.backlog)
    # The memcached copy answers "pending" status reads cheaply. It is written without
    # waiting for a reply: losing it costs nothing, the stream entry is the durable copy.
    # (The JSON document itself, already encoded for the stream.)
    copies = caches["staged"]
    if len(messages) == 1:
        copies.set(payload_cache_key(messages[0].id), encoded[0])
    else:
        copies.set_many({payload_cache_key(m.id): document for m, document in zip(messages, encoded, strict=True)})
    if outcome.drain_needed:
        drain_schedule(slot=0)
    return body


def messages_rejected_count(count: int) -> None:
    """Count messages refused by validation, for /metrics. Never fails the request."""
    try:
        staging.metrics_incr("rejected_invalid", count)
    except Exception:
        logger.warning("could not count rejected messages", exc_info=True)


def drain_schedule(slot: int) -> None:
    """Publish one drain task for a slot this process has just acquired.

    If the broker is unreachable the slot is released so the periodic sweep (or the next
    write) can try again; the messages are already safe in the stream.
    """
    from messages.tasks import drain_messages

    try:
        drain_messages.apply_async(args=(slot,), retry=True, retry_policy={"max_retries": 2, "interval_start": 0.1})
    except Exception:
        logger.exception("could not publish a drain task; the sweep will retry")
        staging.slot_release(slot)


def _parse_entries(
    entries: Sequence[staging.StagedEntry],
) -> tuple[list[tuple[staging.StagedEntry, dict[str, Any]]], int]:
    parsed = []
    oldest_ms = 0
    for entry in entries:
        try:
            payload = staging.payload_decode(entry.payload)
            # The id's form is left to PostgreSQL's uuid type: a bad one fails the COPY and
            # the batch is retried row by row, which dead-letters just that entry.
            for name in ("id", "username", "city", "state", "message"):
                if not isinstance(payload[name], str):
                    raise TypeError(name)
            int(payload["accepted_at"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("dead-lettering malformed staged entry %r: %r", entry.entry_id, exc)
            staging.dead_letter(entry, f"malformed payload: {exc!r}")
            continue
        parsed.append((entry, payload))
        oldest_ms = min(oldest_ms or payload["accepted_at"], payload["accepted_at"])
    return parsed, oldest_ms


def _copy_rows(payloads: Iterable[dict[str, Any]]) -> io.StringIO:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for p in payloads:
        writer.writerow((p["id"], p["username"], p["city"], p["state"], p["message"], int(p["accepted_at"])))
    buffer.seek(0)
    return buffer


_CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS messy_incoming (
    id uuid, username text, city text, state text, message text, accepted_ms bigint
) ON COMMIT DELETE ROWS
"""

_CREATE_INSERTED = """
CREATE TEMP TABLE IF NOT EXISTS messy_inserted (
    username text, city text, state text, accepted_at timestamptz
) ON COMMIT DELETE ROWS
"""

# The rows that were really inserted (not already there) feed the rollups, which is what
# makes a second delivery of the same batch change nothing.
_INSERT_NEW = """
WITH inserted AS (
    INSERT INTO message (id, username, city, state, message, accepted_at, stored_at)
    SELECT id, username, city, state, message, to_timestamp(accepted_ms / 1000.0), now() FROM messy_incoming
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING username, city, state, accepted_at
)
INSERT INTO messy_inserted SELECT * FROM inserted
"""


def messages_persist(payloads: Sequence[dict[str, Any]]) -> int:
    """Store messages and their rollups in one transaction; return how many were new.

    Idempotent on the message id: running it twice with the same payloads stores each
    message once and counts it once. Raises DatabaseError; the caller decides on retries.
    """
    if not payloads:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CREATE_INCOMING)
        cursor.execute(_CREATE_INSERTED)
        # COPY needs psycopg2's own cursor; wrap it so its errors become Django's (DataError...).
        with connection.wrap_database_errors:
            cursor.cursor.copy_expert(
                "COPY messy_incoming (id, username, city, state, message, accepted_ms) FROM STDIN WITH (FORMAT csv)",
                _copy_rows(payloads),
            )
        cursor.execute(_INSERT_NEW)
        inserted = cursor.rowcount
        if inserted:
            rollups_add_inserted(cursor)
    return inserted


def _persist_isolating_bad_rows(parsed: list[tuple[staging.StagedEntry, dict[str, Any]]]) -> tuple[int, list]:
    """After a data error, store entries one by one so a single bad row is dead-lettered
    instead of blocking the batch forever. Returns (stored, entries that were handled)."""
    stored = 0
    handled = []
    for entry, payload in parsed:
        try:
            stored += messages_persist([payload])
            handled.append(entry)
        except (DataError, IntegrityError) as exc:
            staging.dead_letter(entry, f"database refused the row: {exc}")
    return stored, handled


@dataclass
class DrainReport:
    batches: int = 0
    entries: int = 0
    stored: int = 0
    handed_over: bool = False


def messages_drain(slot: int) -> DrainReport:
    """Move staged messages into PostgreSQL, batch by batch, until the stream is empty or
    this run's time is up (then a fresh task takes over, so workers stay responsive to
    shutdown and other queues).

    Entries are acknowledged only after their transaction committed: a crash in between
    leaves them pending, another consumer reclaims them, and the idempotent insert makes
    the second attempt a no-op. DatabaseError (PostgreSQL down) propagates, so the task
    retries with backoff while the entries stay pending for this consumer.
    """
    staging.group_ensure()
    consumer = staging.consumer_name()
    report = DrainReport()
    deadline = time.monotonic() + settings.MESSY_DRAIN_RUN_SECONDS
    while time.monotonic() < deadline:
        entries = staging.batch_claim(consumer, settings.MESSY_DRAIN_BATCH_SIZE)
        if not entries:
            staging.slot_release(slot)
            # A write may have staged a message after our last read but before the release
            # and seen the slot taken; look once more so it is not left for the sweep.
            # (Entries pending in other consumers are not ours to wait for: they are
            # reclaimed once idle, by a drain the sweep starts.)
            if not staging.undelivered_exists() or not staging.slot_acquire(slot, consumer):
                return report
            continue
        staging.slot_refresh(slot)
        _fan_out_if_behind(slot, len(entries))
        parsed, oldest_ms = _parse_entries(entries)
        try:
            stored = messages_persist([payload for _, payload in parsed])
            handled = [entry for entry, _ in parsed]
        except (DataError, IntegrityError):
            logger.exception("batch refused by the database; isolating the bad rows")
            stored, handled = _persist_isolating_bad_rows(parsed)
        lag_ms = max(0, int(time.time() * 1000) - oldest_ms) if oldest_ms else 0
        staging.batch_ack([entry.entry_id for entry in handled], stored, lag_ms)
        report.batches += 1
        report.entries += len(entries)
        report.stored += stored
    report.handed_over = True
    drain_schedule(slot)
    return report


def _fan_out_if_behind(slot: int, batch_len: int) -> None:
    """When a full batch leaves more behind it, start a drain on the next free slot so that
    every worker process can help; the consumer group gives each its own entries."""
    if batch_len < settings.MESSY_DRAIN_BATCH_SIZE or staging.backlog() <= 2 * batch_len:
        return
    for other in range(settings.MESSY_DRAIN_PARALLELISM):
        if other != slot and staging.slot_acquire(other, "fan-out"):
            drain_schedule(other)
            return


def messages_sweep() -> bool:
    """Periodic safety net: make sure a drain runs whenever anything is staged (after a lost
    task, a dead worker, or a broker outage). Returns whether it scheduled one."""
    staging.group_ensure()
    staging.consumers_prune()
    if staging.backlog() and staging.slot_acquire(0, "sweep"):
        drain_schedule(0)
        return True
    return False
