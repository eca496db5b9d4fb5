"""Functions that change the state of messages: accept (stage), persist, drain, erase."""

import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction

from messages import staging
from messages.clients import Quota
from messages.ids import client_message_id, message_id_from
from messages.staging import StagedPayload
from messages.validation import MessageInput
from project.celery import task_publish
from project.errors import TRANSIENT_ERRORS
from project.logs import log_bound
from stats.services.rollups import (
    ROLLUPS_ADDED_TABLE,
    ROLLUPS_REMOVED_TABLE,
    rollups_add,
    rollups_added_table_create,
    rollups_fold_if_left_pending,
    rollups_removed_table_create,
    rollups_subtract,
)

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
    staging.copies_store(staged, encoded)
    if outcome.drain_needed:
        drain_schedule(0, shard)
    return Staged(answer(staged), outcome.remaining, outcome.reset)


def messages_rejected_count(count: int) -> None:
    """Count messages refused by validation, for /metrics. Never fails the request."""
    try:
        staging.metrics_incr("rejected_invalid", count)
    except Exception:
        logger.warning("could not count rejected messages", exc_info=True)


def drain_schedule(slot: int, shard: int = 0) -> None:
    """Publish one drain task for a slot of a shard this process has just acquired.

    If the broker is unreachable the slot is released so the periodic sweep (or the next
    write) can try again; the messages are already safe in the stream.
    """
    if not task_publish("messages.drain", slot, shard):
        staging.slot_release(slot, shard)


def _parse_entries(
    entries: Sequence[staging.StagedEntry], shard: int
) -> tuple[list[tuple[staging.StagedEntry, StagedPayload]], int]:
    parsed = []
    oldest_ms = 0
    for entry in entries:
        try:
            payload = staging.payload_decode(entry.payload)
        except (ValueError, KeyError, TypeError) as exc:
            # A bad id is left to PostgreSQL's uuid type: it fails the COPY and the batch is
            # retried row by row, which dead-letters just that entry.
            logger.error("dead-lettering malformed staged entry %r: %r", entry.entry_id, exc)
            staging.dead_letter(entry, f"malformed payload: {exc!r}", shard)
            continue
        parsed.append((entry, payload))
        oldest_ms = min(oldest_ms or payload["accepted_at"], payload["accepted_at"])
    return parsed, oldest_ms


_Q, _QQ = '"', '""'


def _copy_rows(payloads: Iterable[StagedPayload]) -> io.StringIO:
    """The payloads as COPY csv: text fields quoted (quotes doubled), so any text goes through
    as it is and a NUL byte or a bad id is refused by PostgreSQL, not by this; sent_at empty
    and unquoted when absent (NULL). One f-string a row: csv.writer took three times as long."""
    return io.StringIO(
        "".join(
            [
                f'"{p["id"].replace(_Q, _QQ)}","{p["username"].replace(_Q, _QQ)}","{p["city"].replace(_Q, _QQ)}",'
                f'"{p["state"].replace(_Q, _QQ)}","{p["message"].replace(_Q, _QQ)}",{int(p["accepted_at"])},'
                f"{_sent_ms(p)}\n"
                for p in payloads
            ]
        )
    )


def _sent_ms(payload: StagedPayload) -> str:
    sent_at = payload.get("sent_at")
    return "" if sent_at is None else str(int(sent_at))


# Dropped at commit, not kept for the session: behind a pooler in transaction mode the next
# transaction may run on another server connection, and a table kept there would meet another
# client's (or an older release's) transactions.
_CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS messy_incoming (
    id uuid, username text, city text, state text, message text, accepted_ms bigint, sent_ms bigint
) ON COMMIT DROP
"""

_COPY_INCOMING = (
    "COPY messy_incoming (id, username, city, state, message, accepted_ms, sent_ms) FROM STDIN WITH (FORMAT csv)"
)

# float8 division: exact to the microsecond for any millisecond time, and cheaper than numeric.
_MESSAGE_ROWS = """
INSERT INTO message (id, username, city, state, message, accepted_at, stored_at, sent_at)
SELECT id, username, city, state, message, to_timestamp(accepted_ms / 1000.0::float8), now(),
    to_timestamp(sent_ms / 1000.0::float8)
FROM messy_incoming
ORDER BY id
"""

# Every message of a batch is new, except after a crash between commit and acknowledgement, a
# reclaimed entry its first drain stores at the same time, or the same client id twice in one
# batch: a plain INSERT first, then every row of messy_incoming is new and counts. It skips the
# speculative insertion of ON CONFLICT and the RETURNING, a quarter of the statement's time.
_INSERT_ALL = _MESSAGE_ROWS

# After a duplicate id: only the rows really inserted (not already there) feed the rollups,
# which is what makes a second delivery of the same batch change nothing.
_INSERT_NEW = f"""
WITH inserted AS (
    {_MESSAGE_ROWS}
    ON CONFLICT (id) DO NOTHING
    RETURNING username, city, state, accepted_at
)
INSERT INTO {ROLLUPS_ADDED_TABLE} SELECT * FROM inserted
"""  # noqa: S608 (a constant, not input)

# The rollups' source when every row of messy_incoming was inserted.
_INCOMING_ADDED = (
    "(SELECT username, city, state, to_timestamp(accepted_ms / 1000.0::float8) AS accepted_at FROM messy_incoming)"
    " AS incoming"
)


def _duplicate_id(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    return (
        getattr(exc.__cause__, "pgcode", None) == "23505" and getattr(diag, "constraint_name", None) == "message_pkey"
    )


def messages_persist(payloads: Sequence[StagedPayload], *, defer_rollups: bool = False) -> int:
    """Store messages and their rollups in one transaction; return how many were new.

    Idempotent on the message id: running it twice with the same payloads stores each
    message once and counts it once. Raises DatabaseError; the caller decides on retries.

    The rows are COPYed into a temp table, then inserted with a plain INSERT in a savepoint,
    and counted from the temp table. Only when an id is already stored (a duplicate
    violation) is the savepoint rolled back and the batch inserted again with ON CONFLICT DO
    NOTHING, counting the rows RETURNING says were inserted. Either way in id order, so
    concurrent drains holding the same ids wait for each other without a cycle.
    """
    if not payloads:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CREATE_INCOMING)
        # COPY needs psycopg2's own cursor; wrap it so its errors become Django's (DataError...).
        with connection.wrap_database_errors:
            cursor.cursor.copy_expert(_COPY_INCOMING, _copy_rows(payloads), size=65536)
        try:
            with transaction.atomic():
                cursor.execute(_INSERT_ALL)
                inserted, added = cursor.rowcount, _INCOMING_ADDED
        except IntegrityError as exc:
            if not _duplicate_id(exc):
                raise
            rollups_added_table_create(cursor)
            cursor.execute(_INSERT_NEW)
            inserted, added = cursor.rowcount, ROLLUPS_ADDED_TABLE
        if inserted:
            rollups_add(cursor, added, defer=defer_rollups)
    return inserted


def _persist_isolating_bad_rows(
    parsed: list[tuple[staging.StagedEntry, StagedPayload]], shard: int
) -> tuple[int, list[staging.StagedEntry]]:
    """After a data error, store entries one by one so a single bad row is dead-lettered
    instead of blocking the batch forever. Returns (stored, entries that were handled)."""
    stored = 0
    handled = []
    for entry, payload in parsed:
        try:
            stored += messages_persist([payload])
            handled.append(entry)
        except (DataError, IntegrityError) as exc:
            # Left pending if Redis is too full to take the dead letter: retried next run.
            staging.dead_letter(entry, f"database refused the row: {exc}", shard)
    return stored, handled


@dataclass
class DrainReport:
    batches: int = 0
    entries: int = 0
    stored: int = 0


@dataclass(frozen=True, slots=True)
class _Batch:
    entries: list[staging.StagedEntry]
    parsed: list[tuple[staging.StagedEntry, StagedPayload]]  # the well-formed ones
    oldest_ms: int


def _batch_read(reader: staging.BatchReader) -> _Batch:
    entries = reader.claim(settings.MESSY_DRAIN_BATCH_SIZE)
    parsed, oldest_ms = _parse_entries(entries, reader.shard)
    return _Batch(entries, parsed, oldest_ms)


def _batch_store(batch: _Batch, shard: int) -> tuple[int, list[staging.StagedEntry]]:
    """Persist a batch; returns (stored, entries handled: stored, already there, or
    dead-lettered). A batch the database refuses is retried row by row."""
    try:
        # A full batch has more behind it: its counts may wait for the next fold (stats.services.rollups).
        full = len(batch.entries) >= settings.MESSY_DRAIN_BATCH_SIZE
        payloads = [payload for _, payload in batch.parsed]
        return messages_persist(payloads, defer_rollups=full), [entry for entry, _ in batch.parsed]
    except (DataError, IntegrityError) as exc:
        # The SQLSTATE and the batch's entry ids only: PostgreSQL's message and DETAIL quote
        # the refused row (its message and username), so neither the error nor a traceback.
        # The batch's ids are in the log context (messages_drain).
        logger.error(
            "batch refused by the database (SQLSTATE %s); isolating the bad rows",
            getattr(exc.__cause__, "pgcode", None),
        )
        return _persist_isolating_bad_rows(batch.parsed, shard)


def messages_drain(slot: int, shard: int = 0) -> DrainReport:
    """Move staged messages of one shard into PostgreSQL, batch by batch, until its stream is
    empty or this run's time is up (then a fresh task takes over, so workers stay responsive
    to shutdown and other queues).

    Entries are acknowledged only after their transaction committed: a crash in between
    leaves them pending, another consumer reclaims them, and the idempotent insert makes
    the second attempt a no-op. DatabaseError (PostgreSQL down) propagates, so the task
    retries with backoff while the entries stay pending for this consumer.

    Redis work runs on a helper thread, one call at a time, overlapping PostgreSQL's: after a
    full batch the next one is read and decoded while this one is stored, and a committed
    batch is acknowledged while the next one is stored. (The database connection stays on this
    thread.) A batch read ahead is pending for this consumer alone, so this run stores it even
    past its deadline; if storing fails first, it stays pending and the retried task reads it
    back before anything new.
    """
    staging.group_ensure(shard)
    consumer = staging.consumer_name()
    reader = staging.BatchReader(consumer, shard)
    report = DrainReport()
    deadline = time.monotonic() + settings.MESSY_DRAIN_RUN_SECONDS
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-redis") as redis_side:
        ahead: Future[_Batch] | None = None
        acked: Future[None] | None = None
        while ahead is not None or time.monotonic() < deadline:
            if ahead is None and acked is not None:
                # The last batch's acknowledgement first: read now, its entries could still be
                # pending to this consumer and come back a second time.
                acked.result()
                acked = None
            batch = ahead.result() if ahead is not None else _batch_read(reader)
            ahead = None
            if not batch.entries:
                if acked is not None:
                    acked.result()
                rollups_fold_if_left_pending()
                staging.slot_release(slot, shard)
                # A write may have staged a message after our last read but before the release
                # and seen the slot taken; look once more so it is not left for the sweep.
                # (Entries pending in other consumers are not ours to wait for: they are
                # reclaimed once idle, by a drain the sweep starts.) A full Redis refuses the
                # slot's SET: this drain then goes on, as the only one that can empty it.
                if not staging.undelivered_exists(shard) or not staging.slot_acquire(
                    slot, consumer, if_full=True, shard=shard
                ):
                    return report
                continue
            staging.slot_refresh(slot, shard)
            _fan_out_if_behind(slot, shard, len(batch.entries))
            if len(batch.entries) >= settings.MESSY_DRAIN_BATCH_SIZE and time.monotonic() < deadline:
                ahead = redis_side.submit(_batch_read, reader)
            # The batch in the log context by its ends (entry ids are ordered; thousands of ids
            # on every line would cost more than they tell).
            with log_bound(
                batch_first_entry=batch.entries[0].entry_id.decode(),
                batch_last_entry=batch.entries[-1].entry_id.decode(),
                batch_first_message=batch.parsed[0][1]["id"] if batch.parsed else None,
                batch_last_message=batch.parsed[-1][1]["id"] if batch.parsed else None,
                batch_size=len(batch.entries),
            ):
                stored, handled = _batch_store(batch, shard)
            if acked is not None:
                acked.result()  # the previous batch's, long done: raise what it raised
            lag_ms = max(0, int(time.time() * 1000) - batch.oldest_ms) if batch.oldest_ms else 0
            # Committed: acknowledged on the helper thread, after the read ahead it queued.
            acked = redis_side.submit(staging.batch_ack, [entry.entry_id for entry in handled], stored, lag_ms, shard)
            report.batches += 1
            report.entries += len(batch.entries)
            report.stored += stored
        if acked is not None:
            acked.result()
    drain_schedule(slot, shard)
    return report


def _fan_out_if_behind(slot: int, shard: int, batch_len: int) -> None:
    """When a full batch leaves more behind it, start a drain on the next free slot of this
    shard so that every worker process can help; the consumer group gives each its own
    entries. The slots: as many as live ingest worker processes (staging.drain_capacity), so
    a worker added anywhere adds a drain, with no setting to change."""
    if batch_len < settings.MESSY_DRAIN_BATCH_SIZE or staging.backlog(shard) <= 2 * batch_len:
        return
    for other in range(staging.drain_capacity()):
        if other != slot and staging.slot_acquire(other, "fan-out", shard=shard):
            drain_schedule(other, shard)
            return


def messages_sweep() -> bool:
    """Periodic safety net: make sure a drain runs on every shard where anything is staged
    (after a lost task, a dead worker, or a broker outage). Returns whether it scheduled one."""
    staging.legacy_stream_adopt()
    scheduled = False
    # Shard by shard: on a cluster one master failing over must not stop the others' sweep.
    for shard in range(len(staging.shards())):
        try:
            staging.group_ensure(shard)
            if staging.backlog(shard) and staging.slot_acquire(0, "sweep", if_full=True, shard=shard):
                drain_schedule(0, shard)
                scheduled = True
        except TRANSIENT_ERRORS as exc:
            logger.warning("sweep: shard %d unreachable (%s); the next sweep tries again", shard, type(exc).__name__)
    staging.consumers_prune()
    return scheduled


def drain_workers_heartbeat(name: str, processes: int, stop: threading.Event) -> None:
    """Say every few seconds, until `stop` is set, that an ingest worker (`name`, with
    `processes` pool processes) is alive: it counts towards the drain slots
    (staging.drain_capacity) until a while after its last word. Never raises: a Redis outage
    only shrinks the slots for a while."""
    while True:
        try:
            staging.worker_heartbeat(name, processes)
        except Exception:
            logger.warning("could not report this worker's drain capacity", exc_info=True)
        if stop.wait(staging.WORKER_HEARTBEAT_SECONDS):
            return


def drain_workers_forget(name: str) -> None:
    staging.worker_forget(name)


# --- erasure -----------------------------------------------------------------------------------
# Where a user's messages can be: the staging stream (and its dead letters) with their memcached
# copies, and the message table. An entry a drain had already read when it was deleted from the
# stream is still in that drain's hands and may be stored after a DELETE of the table, so the
# order is: erase the staged entries, wait until no drain holds any of them, then erase the
# stored messages.


def messages_erase_staged(username: str, heartbeat: Callable[[], None]) -> list[tuple[int, bytes]]:
    """Delete the user's entries from every shard's staging stream and from the dead letters,
    and their memcached copies; return (shard, entry id) of the entries deleted from staging
    streams (the ones a drain may hold: pass them to messages_erase_wait). Calls heartbeat()
    while it scans (a backlog of a million entries takes seconds). Safe to repeat."""
    in_flight: list[tuple[int, bytes]] = []
    for shard in staging.shards():
        deleted = staging.stream_user_delete(shard.stream, username, heartbeat)
        staging.copies_delete(message_id for _, message_id in deleted if message_id)
        copies_delete_later((message_id, staging.entry_ms(entry_id)) for entry_id, message_id in deleted if message_id)
        in_flight.extend((shard.index, entry_id) for entry_id, _ in deleted)
    dead = staging.stream_user_delete(staging.dead_letter_key(), username, heartbeat)
    staging.copies_delete(message_id for _, message_id in dead if message_id)
    return in_flight


def messages_erase_wait(entry_ids: Sequence[tuple[int, bytes]], heartbeat: Callable[[], None]) -> bool:
    """Wait until no drain holds any of these (deleted) entries: a drain acknowledges an entry
    only after the transaction storing it committed, so afterwards a DELETE sees the row.
    Returns False when MESSY_ERASE_PENDING_WAIT_SECONDS pass first; calls heartbeat() between
    polls."""
    waiting = set(entry_ids)
    deadline = time.monotonic() + settings.MESSY_ERASE_PENDING_WAIT_SECONDS
    while waiting:
        waiting = {
            (shard, entry_id)
            for shard in {shard for shard, _ in waiting}
            for entry_id in staging.pending_among({e for s, e in waiting if s == shard}, shard)
        }
        if not waiting:
            break
        if time.monotonic() > deadline:
            return False
        heartbeat()
        time.sleep(0.2)
    return True


_DELETE_CHUNK = f"""
WITH gone AS (
    DELETE FROM message WHERE id IN (SELECT id FROM message WHERE username = %s LIMIT %s)
    RETURNING id, username, city, state, accepted_at
), noted AS (
    INSERT INTO {ROLLUPS_REMOVED_TABLE} (username, city, state, accepted_at)
    SELECT username, city, state, accepted_at FROM gone
)
SELECT id, (extract(epoch FROM accepted_at) * 1000)::bigint FROM gone
"""  # noqa: S608 (a constant, not input)


def messages_erase_stored(username: str, limit: int) -> int:
    """Delete up to `limit` stored messages of the user, subtract them from the rollups and
    drop their memcached copies; return how many were deleted (fewer than `limit`: none left).

    Runs in the caller's transaction (a savepoint of it), so the caller's own bookkeeping (a
    job checkpoint) commits with the deletion or not at all. Takes the message rows before the
    rollup rows, like the drains, so the two never wait for each other in a cycle.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        rollups_removed_table_create(cursor)
        cursor.execute(_DELETE_CHUNK, [username, limit])
        erased = [(str(message_id), accepted_ms) for message_id, accepted_ms in cursor.fetchall()]
        if erased:
            rollups_subtract(cursor)
            # Before commit: if the transaction then fails, a missing cache copy costs nothing.
            staging.copies_delete(message_id for message_id, _ in erased)
            copies_delete_later(erased)
    return len(erased)


def copies_delete_later(accepted: Iterable[tuple[str, int]]) -> None:
    """Delete the memcached copies of these messages (message id, Unix ms accepted) once more,
    after any copy a web process may still hold for them has been sent (staging.COPIES_GROUP):
    for an erasure, whose first deletion may come before such a copy. Only the ones accepted
    less than that bound ago are concerned; none: nothing is published. If the broker cannot
    take the task, such a copy lasts until MEMCACHED_PAYLOAD_TTL (logged by task_publish)."""
    late_seconds = staging.copies_late_seconds()
    since_ms = time.time_ns() // 1_000_000 - late_seconds * 1000
    recent = [message_id for message_id, accepted_ms in accepted if accepted_ms > since_ms]
    if recent:
        task_publish("messages.copies_delete", recent, countdown=late_seconds)


def copies_delete(message_ids: Sequence[str]) -> None:
    staging.copies_delete(message_ids)


# Oldest first through the accepted_at index. SKIP LOCKED: a row another transaction holds (an
# erasure deleting it) is left to that transaction, or to a later chunk, so retention never
# waits on message rows, and so never in a cycle with an erasure taking them in another order.
_DELETE_OLDER = f"""
WITH gone AS (
    DELETE FROM message WHERE id IN (
        SELECT id FROM message WHERE accepted_at < %s ORDER BY accepted_at LIMIT %s FOR UPDATE SKIP LOCKED
    )
    RETURNING username, city, state, accepted_at
)
INSERT INTO {ROLLUPS_REMOVED_TABLE} (username, city, state, accepted_at) SELECT * FROM gone
"""  # noqa: S608 (a constant, not input)


def messages_delete_older_than(cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` stored messages accepted before `cutoff` (the time the rollups count
    them at), oldest first, and subtract them from the rollups; return how many were deleted.
    Fewer than `limit`: none is left but those another transaction held (a later call takes
    them).

    Runs in the caller's transaction (a savepoint of it), like messages_erase_stored, so a job's
    checkpoint commits with the deletion or not at all; message rows first, then rollup rows.
    Memcached copies are left alone: they expire within MEMCACHED_PAYLOAD_TTL of staging.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        rollups_removed_table_create(cursor)
        cursor.execute(_DELETE_OLDER, [cutoff, limit])
        deleted: int = cursor.rowcount
        if deleted:
            rollups_subtract(cursor)
    return deleted


# --- dead letters --------------------------------------------------------------------------------
# Entries no drain could store (malformed, or refused by PostgreSQL) wait in the dead-letter
# stream, untrimmed, until an operator replays or purges them (manage.py deadletters).


def _copies_of(letters: Sequence[staging.DeadLetter]) -> tuple[list[StagedPayload], list[bytes]]:
    payloads, documents = [], []
    for letter in letters:
        try:
            payloads.append(staging.payload_decode(letter.payload))
        except (ValueError, KeyError, TypeError):
            continue  # malformed: it has no status to show
        documents.append(letter.payload)
    return payloads, documents


def _dead_letters_each(entry_ids: Sequence[str] | None) -> Iterable[list[staging.DeadLetter]]:
    if entry_ids is not None:
        yield staging.dead_letters_get(entry_ids)
        return
    after = "-"
    while page := staging.dead_letters_page(after):
        yield page
        after = page[-1].entry_id


def dead_letters_replay(entry_ids: Sequence[str] | None = None) -> int:
    """Put dead letters (all, or those of these entry ids) back on the staging stream once
    their cause is fixed, and schedule a drain; return how many. Their memcached copies are
    written again, so their status reads pending until stored. Safe to repeat: the insert is
    idempotent on the message id. One that still cannot be stored is dead-lettered again."""
    moved = 0
    for page in _dead_letters_each(entry_ids):
        for letter in page:
            staging.dead_letter_restage(letter)
        payloads, documents = _copies_of(page)
        if payloads:
            staging.copies_store(payloads, documents)
        moved += len(page)
    if moved and staging.slot_acquire(0, "replay", if_full=True):
        drain_schedule(0)
    return moved


def dead_letters_purge(entry_ids: Sequence[str] | None = None) -> int:
    """Delete dead letters (all, or those of these entry ids) and their memcached copies;
    return how many. Their messages are then lost: an operator's decision."""
    purged = 0
    for page in _dead_letters_each(entry_ids):
        purged += staging.dead_letters_delete([letter.entry_id for letter in page])
        staging.copies_delete(payload["id"] for payload in _copies_of(page)[0])
    return purged
