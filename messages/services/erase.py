"""Erasing a user's messages (staged, then stored) and deleting old ones for retention.

# Documented in docs/staging.md ("Erasure").
"""

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from messages import copies, staging
from project.celery import task_publish
from project.redis import redis_aof_rewrite
from stats.services.rollups import (
    ROLLUPS_REMOVED_TABLE,
    rollups_removed_table_create,
    rollups_subtract,
)

logger = logging.getLogger(__name__)


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
        copies.copies_delete(message_id for _, message_id in deleted if message_id)
        copies_delete_later((message_id, staging.entry_ms(entry_id)) for entry_id, message_id in deleted if message_id)
        in_flight.extend((shard.index, entry_id) for entry_id, _ in deleted)
    dead = staging.stream_user_delete(staging.dead_letter_key(), username, heartbeat)
    copies.copies_delete(message_id for _, message_id in dead if message_id)
    return in_flight


def messages_erase_from_disk(heartbeat: Callable[[], None]) -> bool:
    """Have the staging Redis rewrite its append-only file, so the entries an erasure deleted
    leave the disk too (until then the file still holds the commands that wrote them:
    docs/data-tier.md). A rewrite already running began before the deletion: wait for it to end,
    then start one. False when none could start within MESSY_ERASE_PENDING_WAIT_SECONDS."""
    deadline = time.monotonic() + settings.MESSY_ERASE_PENDING_WAIT_SECONDS
    while not redis_aof_rewrite():
        if time.monotonic() > deadline:
            logger.warning(
                "the staging Redis was rewriting its log throughout; erased entries stay on disk until its next rewrite"
            )
            return False
        heartbeat()
        time.sleep(0.5)
    return True


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
            for entry_id in staging.pending_among(staging.shards()[shard], {e for s, e in waiting if s == shard})
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
            copies.copies_delete(message_id for message_id, _ in erased)
            copies_delete_later(erased)
    return len(erased)


def copies_delete_later(accepted: Iterable[tuple[str, int]]) -> None:
    """Delete the memcached copies of these messages (message id, Unix ms accepted) once more,
    after any copy a web process may still hold for them has been sent (copies.COPIES_GROUP):
    for an erasure, whose first deletion may come before such a copy. Only the ones accepted
    less than that bound ago are concerned; none: nothing is published. If the broker cannot
    take the task, such a copy lasts until MEMCACHED_PAYLOAD_TTL (logged by task_publish)."""
    late_seconds = copies.copies_late_seconds()
    since_ms = time.time_ns() // 1_000_000 - late_seconds * 1000
    recent = [message_id for message_id, accepted_ms in accepted if accepted_ms > since_ms]
    if recent:
        task_publish("messages.copies_delete", recent, countdown=late_seconds)


def copies_delete(message_ids: Sequence[str]) -> None:
    copies.copies_delete(message_ids)


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
