"""Drains: staged entries of a shard read in batches, persisted, acknowledged; the sweep.

# Documented in docs/staging.md ("Drains").
"""

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import DataError, IntegrityError

from messages import staging
from messages.services.persist import messages_persist
from messages.staged import StagedPayload, payload_decode
from project.celery import task_publish
from project.errors import TRANSIENT_ERRORS
from project.logs import log_bound
from stats.services.rollups import rollups_fold_if_left_pending

logger = logging.getLogger(__name__)


def drain_schedule(shard: staging.Shard, slot: int) -> None:
    """Publish one drain task for a slot of a shard this process has just acquired.

    If the broker is unreachable the slot is released so the periodic sweep (or the next
    write) can try again; the messages are already safe in the stream.
    """
    if not task_publish("messages.drain", slot, shard.index):
        staging.slot_release(shard, slot)


def _parse_entries(
    shard: staging.Shard, entries: Sequence[staging.StagedEntry]
) -> tuple[list[tuple[staging.StagedEntry, StagedPayload]], int]:
    parsed = []
    oldest_ms = 0
    for entry in entries:
        try:
            payload = payload_decode(entry.payload)
        except (ValueError, KeyError, TypeError) as exc:
            # A bad id is left to PostgreSQL's uuid type: it fails the COPY and the batch is
            # retried row by row, which dead-letters just that entry.
            logger.error("dead-lettering malformed staged entry %r: %r", entry.entry_id, exc)
            staging.dead_letter(shard, entry, f"malformed payload: {exc!r}")
            continue
        parsed.append((entry, payload))
        oldest_ms = min(oldest_ms or payload["accepted_at"], payload["accepted_at"])
    return parsed, oldest_ms


def _persist_isolating_bad_rows(
    shard: staging.Shard, parsed: list[tuple[staging.StagedEntry, StagedPayload]]
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
            staging.dead_letter(shard, entry, f"database refused the row: {exc}")
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
    parsed, oldest_ms = _parse_entries(reader.shard, entries)
    return _Batch(entries, parsed, oldest_ms)


def _batch_store(shard: staging.Shard, batch: _Batch) -> tuple[int, list[staging.StagedEntry]]:
    """Persist a batch; returns (stored, entries handled: stored, already there, or
    dead-lettered). A batch the database refuses is retried row by row."""
    # A full batch means more are coming: its rollups wait for a fold. A last, partial one is
    # folded at once, so the counts are current when the backlog is empty.
    full = len(batch.entries) >= settings.MESSY_DRAIN_BATCH_SIZE
    try:
        stored = messages_persist([payload for _, payload in batch.parsed], defer_rollups=full)
        return stored, [entry for entry, _ in batch.parsed]
    except (DataError, IntegrityError) as exc:
        # The SQLSTATE and the batch's entry ids only: PostgreSQL's message and DETAIL quote
        # the refused row (its message and username), so neither the error nor a traceback.
        # The batch's ids are in the log context (messages_drain).
        logger.error(
            "batch refused by the database (SQLSTATE %s); isolating the bad rows",
            getattr(exc.__cause__, "pgcode", None),
        )
        return _persist_isolating_bad_rows(shard, batch.parsed)


def messages_drain(shard: staging.Shard, slot: int) -> DrainReport:
    """Move staged messages of one shard into PostgreSQL, batch by batch, until its stream is
    empty or this run's time is up (then a fresh task takes over).

    Entries are acknowledged only after their transaction committed; DatabaseError propagates
    (the task retries while the entries stay pending for this consumer). Redis work overlaps
    PostgreSQL's on a helper thread: docs/staging.md ("Drains").
    """
    staging.group_ensure(shard)
    consumer = staging.consumer_name()
    reader = staging.BatchReader(shard, consumer)
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
                staging.slot_release(shard, slot)
                # A write may have staged a message after our last read but before the release
                # and seen the slot taken; look once more so it is not left for the sweep.
                # (Entries pending in other consumers are not ours to wait for: they are
                # reclaimed once idle, by a drain the sweep starts.) A full Redis refuses the
                # slot's SET: this drain then goes on, as the only one that can empty it.
                if not staging.undelivered_exists(shard) or not staging.slot_acquire(
                    shard, slot, consumer, if_full=True
                ):
                    return report
                continue
            staging.slot_refresh(shard, slot)
            _fan_out_if_behind(shard, slot, len(batch.entries))
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
                stored, handled = _batch_store(shard, batch)
            if acked is not None:
                acked.result()  # the previous batch's, long done: raise what it raised
            lag_ms = max(0, int(time.time() * 1000) - batch.oldest_ms) if batch.oldest_ms else 0
            # Committed: acknowledged on the helper thread, after the read ahead it queued.
            acked = redis_side.submit(
                staging.batch_ack,
                shard,
                [entry.entry_id for entry in handled],
                stored,
                lag_ms,
                [payload["id"] for _, payload in batch.parsed],
            )
            report.batches += 1
            report.entries += len(batch.entries)
            report.stored += stored
        if acked is not None:
            acked.result()
    drain_schedule(shard, slot)
    return report


def _fan_out_if_behind(shard: staging.Shard, slot: int, batch_len: int) -> None:
    """When a full batch leaves more behind it, start a drain on the next free slot of this
    shard so that every worker process can help; the consumer group gives each its own
    entries. The slots: as many as live ingest worker processes (staging.drain_capacity), so
    a worker added anywhere adds a drain, with no setting to change."""
    if batch_len < settings.MESSY_DRAIN_BATCH_SIZE or staging.backlog(shard) <= 2 * batch_len:
        return
    for other in range(staging.drain_capacity()):
        if other != slot and staging.slot_acquire(shard, other, "fan-out"):
            drain_schedule(shard, other)
            return


def messages_sweep() -> bool:
    """Periodic safety net: make sure a drain runs on every shard where anything is staged
    (after a lost task, a dead worker, or a broker outage). Returns whether it scheduled one."""
    scheduled = False
    # Shard by shard: on a cluster one master failing over must not stop the others' sweep.
    for shard in staging.shards():
        try:
            staging.group_ensure(shard)
            if staging.backlog(shard) and staging.slot_acquire(shard, 0, "sweep", if_full=True):
                drain_schedule(shard, 0)
                scheduled = True
        except TRANSIENT_ERRORS as exc:
            logger.warning(
                "sweep: shard %d unreachable (%s); the next sweep tries again", shard.index, type(exc).__name__
            )
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
