"""Erasure: remove every stored and staged message of one username, keeping rollups exact,
and leave no trace of who it was (only the count of erasures performed).

Where a user's messages can be, and how each place is emptied:
- PostgreSQL: deleted in chunks; each chunk's DELETE ... RETURNING feeds
  rollups_subtract_deleted and the job's checkpoint in one transaction.
- The Redis staging stream (and its dead-letter stream): matching entries are deleted (XDEL).
  An entry a drain worker had already read is then still in that worker's hands: it may
  commit the message after our DELETE. Such entries stay in the consumer group's pending list
  until the drain acknowledges them after its commit, so the job waits until none of the
  entries it deleted is pending, and only then deletes from PostgreSQL.
- memcached copies (`staged:<id>`, alias "staged"): deleted for every message erased.
Messages that arrive while the job runs are caught by repeating the pass until a scan of the
stream finds nothing of the user.

The username lives in the job row only while the job is unfinished (it is needed to resume
after a worker died) and is never logged; the final transition wipes it.
"""

import json
import time
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction

from messages import staging
from messages.models import Message
from messages.services import payload_cache_key
from stats.services import CREATE_DELETED_TABLE, rollups_subtract_deleted, stats_republish
from tasks.models import ApiToken, Job
from tasks.services import JobFailed, JobRun, Outcome, job_create

SCAN_COUNT = 1000
# A user who keeps writing could keep an erasure going for ever; after this many passes the
# job ends with what it caught (their later messages need another erasure).
MAX_PASSES = 10

_DELETE_CHUNK = """
WITH gone AS (
    DELETE FROM message WHERE id IN (SELECT id FROM message WHERE username = %s LIMIT %s)
    RETURNING id, username, city, state, accepted_at
), noted AS (
    INSERT INTO messy_deleted (username, city, state, accepted_at)
    SELECT username, city, state, accepted_at FROM gone
)
SELECT id FROM gone
"""


def erasure_job_create(username: str, *, created_by: Any = None, token: ApiToken | None = None) -> Job:
    return job_create(Job.Kind.ERASE, subject=username, progress_unit="messages", created_by=created_by, token=token)


def erasure_wait_seconds() -> float:
    """Take one of MESSY_ERASE_RATE_PER_MINUTE erasure starts of the current minute, shared by
    every worker through a Redis counter; 0 when taken, else the seconds until the next minute."""
    now = time.time()
    window = int(now // 60)
    pipe = staging.redis_client().pipeline(transaction=True)
    pipe.incr(staging.key("jobs", "erase-rate", str(window)))
    pipe.expire(staging.key("jobs", "erase-rate", str(window)), 120)
    started, _ = pipe.execute()
    if started <= settings.MESSY_ERASE_RATE_PER_MINUTE:
        return 0
    return (window + 1) * 60 - now + 0.1


def erasure_run(run: JobRun) -> Outcome:
    username = run.job.subject
    state: dict[str, Any] = {"stored": 0, "staged": 0, **run.job.checkpoint}
    if "total" not in state:
        state["total"] = Message.objects.filter(username=username).count()
        with transaction.atomic():
            run.checkpoint(done=0, total=state["total"], message="Erasing stored messages.", state=state)
    for _ in range(MAX_PASSES):
        deleted_entries = _staged_erase(run, username)
        state["staged"] += len(deleted_entries)
        _in_flight_wait(run, deleted_entries)
        state = _stored_erase(run, username, state)
        if not deleted_entries:
            break
    stats_republish()
    return Outcome({"messages_erased": state["stored"], "staged_erased": state["staged"]})


def _stored_erase(run: JobRun, username: str, state: dict[str, Any]) -> dict[str, Any]:
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CREATE_DELETED_TABLE)
            cursor.execute(_DELETE_CHUNK, [username, settings.MESSY_ERASE_BATCH_SIZE])
            message_ids = [str(message_id) for (message_id,) in cursor.fetchall()]
            if message_ids:
                rollups_subtract_deleted(cursor)
                # Before commit: if the transaction then fails, a missing cache copy costs nothing.
                caches["staged"].delete_many([payload_cache_key(message_id) for message_id in message_ids])
            state = {**state, "stored": state["stored"] + len(message_ids)}
            total = max(state["total"], state["stored"])
            run.checkpoint(
                done=state["stored"], total=total, message=f"{state['stored']:,} messages erased.", state=state
            )
        if len(message_ids) < settings.MESSY_ERASE_BATCH_SIZE:
            return state
        run.pause_point()


def _username_of(raw: bytes | None) -> tuple[str, str]:
    try:
        payload = json.loads(raw or b"")
        return str(payload["username"]), str(payload["id"])
    except (ValueError, KeyError, TypeError):
        return "", ""


def _staged_erase(run: JobRun, username: str) -> list[bytes]:
    """Delete the user's entries from the staging and dead-letter streams; return the ids of
    those deleted from the staging stream (the ones a drain may hold). A backlog of a million
    entries takes seconds to scan, so the scan keeps the heartbeat going."""
    client = staging.redis_client()
    deleted: list[bytes] = []
    for stream in (staging.stream_key(), staging.dead_letter_key()):
        start = "-"
        while True:
            entries: list[Any] = client.xrange(stream, min=start, max="+", count=SCAN_COUNT)
            matching = []
            for entry_id, fields in entries:
                name, message_id = _username_of(fields.get(b"m"))
                if name == username:
                    matching.append((entry_id, message_id))
            if matching:
                client.xdel(stream, *[entry_id for entry_id, _ in matching])
                caches["staged"].delete_many([payload_cache_key(message_id) for _, message_id in matching])
                if stream == staging.stream_key():
                    deleted.extend(entry_id for entry_id, _ in matching)
            if len(entries) < SCAN_COUNT:
                break
            start = "(" + entries[-1][0].decode()
            run.heartbeat()
    return deleted


def _entry_order(entry_id: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split(b"-"))


def _in_flight_wait(run: JobRun, entry_ids: list[bytes]) -> None:
    """Wait until no drain holds any of these (deleted) entries: a drain acknowledges an entry
    only after the transaction storing it committed, so afterwards a DELETE sees the row."""
    if not entry_ids:
        return
    client = staging.redis_client()
    waiting = set(entry_ids)
    low, high = min(waiting, key=_entry_order), max(waiting, key=_entry_order)
    deadline = time.monotonic() + settings.MESSY_ERASE_PENDING_WAIT_SECONDS
    while True:
        try:
            pending: list[dict[str, Any]] = client.xpending_range(
                staging.stream_key(), staging.CONSUMER_GROUP, min=low, max=high, count=len(waiting) + 100_000
            )
        except redis.ResponseError:
            return  # no consumer group yet: nothing was ever read, nothing is in flight
        waiting &= {item["message_id"] for item in pending}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise JobFailed(
                "Some of the user's messages were still being stored by a drain worker when the wait "
                "ended; nothing is lost by running the erasure again."
            )
        run.heartbeat()
        time.sleep(0.2)
