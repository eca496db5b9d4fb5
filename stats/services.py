"""Functions that change statistics: rollup maintenance, repair, and publishing the blob."""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messages import staging
from project.storage import bucket_cors_set, bucket_ensure, s3_client
from stats.models import Totals
from stats.selectors import (
    RECOUNT_CREATE,
    ROLLUP_TABLES,
    RollupDifference,
    published_marker_key,
    rollups_differences_in_transaction,
    stats_blob_build,
    stats_blob_encode,
)

logger = logging.getLogger(__name__)

# Rollups change in the transaction that stores or erases the messages, by set-based upserts
# over a temp table of the affected rows (one statement per rollup, never a round trip per row).
#
# Why no deadlocks: each upsert takes its row locks in key order (the ORDER BY feeds the
# insert in that order), every transaction, adding or subtracting, touches the tables in the
# same order (state, city, user, minute, totals), and the single totals row comes last, so it
# is held only for the moment before commit. Concurrent drains wait for each other; none
# waits in a cycle. RETURNING (xmax = 0) is true for rows the upsert inserted rather than
# updated: that is how new users, cities and states are counted.
_UPSERTS = (
    (
        "stats_state_count",
        """
        INSERT INTO stats_state_count (state, messages)
        SELECT state, {sign} * count(*) FROM {source} GROUP BY state ORDER BY state
        ON CONFLICT (state) DO UPDATE SET messages = stats_state_count.messages + EXCLUDED.messages
        RETURNING (xmax = 0)
        """,
        "DELETE FROM stats_state_count WHERE messages <= 0 AND state IN (SELECT state FROM {source})",
    ),
    (
        "stats_city_count",
        """
        INSERT INTO stats_city_count (state, city, messages)
        SELECT state, city, {sign} * count(*) FROM {source} GROUP BY state, city ORDER BY state, city
        ON CONFLICT (state, city) DO UPDATE SET messages = stats_city_count.messages + EXCLUDED.messages
        RETURNING (xmax = 0)
        """,
        """
        DELETE FROM stats_city_count WHERE messages <= 0
        AND (state, city) IN (SELECT state, city FROM {source})
        """,
    ),
    (
        "stats_user_count",
        """
        INSERT INTO stats_user_count (username, messages)
        SELECT username, {sign} * count(*) FROM {source} GROUP BY username ORDER BY username
        ON CONFLICT (username) DO UPDATE SET messages = stats_user_count.messages + EXCLUDED.messages
        RETURNING (xmax = 0)
        """,
        "DELETE FROM stats_user_count WHERE messages <= 0 AND username IN (SELECT username FROM {source})",
    ),
)

# Adding: the user upsert also puts every user who now ranks on the leaderboard onto it (see
# stats.models.TopUser), in the same statement and in username order, so board rows are
# locked in the same order as user rows. A board row below the last place may keep an old
# count: it was not updated because it ranked below, and stays below until its next update.
_USER_ADD = """
WITH upserted AS (
    INSERT INTO stats_user_count (username, messages)
    SELECT username, count(*) FROM messy_inserted GROUP BY username ORDER BY username
    ON CONFLICT (username) DO UPDATE SET messages = stats_user_count.messages + EXCLUDED.messages
    RETURNING username, messages, (xmax = 0) AS created
), last_place AS (
    -- Rank STATS_TOP_USERS_KEPT (none while the board has fewer users).
    SELECT messages, username FROM stats_top_user ORDER BY messages DESC, username OFFSET %(kept)s - 1 LIMIT 1
), onto_board AS (
    -- Users who now rank at or above the last place, in the board's order (more messages
    -- first, then username): a tie with the last place that sorts after it stays off.
    INSERT INTO stats_top_user (username, messages)
    SELECT u.username, u.messages FROM upserted u LEFT JOIN last_place l ON true
    WHERE l.username IS NULL OR u.messages > l.messages OR (u.messages = l.messages AND u.username <= l.username)
    ORDER BY u.username
    ON CONFLICT (username) DO UPDATE SET messages = EXCLUDED.messages
)
SELECT count(*) FILTER (WHERE created) FROM upserted
"""

# Users below the last place are dropped once they are as many as the places, not after
# every batch: the board is a superset of the top, and trimming costs a sort of it. Runs
# while the totals row is held, so one transaction at a time trims; SKIP LOCKED because a
# board row may be locked by a drain that is itself waiting for the totals row (a row skipped
# now goes in a later trim).
_BOARD_TRIM = """
DELETE FROM stats_top_user WHERE (SELECT count(*) FROM stats_top_user) > 2 * %(kept)s
AND username IN (
    SELECT username FROM stats_top_user ORDER BY messages DESC, username OFFSET %(kept)s
    FOR UPDATE SKIP LOCKED
)
"""

# Subtracting: the erased users' board rows follow their new counts (or leave with them).
_BOARD_SUBTRACT = """
WITH lowered AS (
    UPDATE stats_top_user t SET messages = u.messages FROM stats_user_count u
    WHERE t.username = u.username AND t.username IN (SELECT username FROM messy_deleted)
    RETURNING 1
), gone AS (
    DELETE FROM stats_top_user t
    WHERE t.username IN (SELECT username FROM messy_deleted)
    AND NOT EXISTS (SELECT 1 FROM stats_user_count u WHERE u.username = t.username)
    RETURNING 1
)
SELECT (SELECT count(*) FROM lowered) + (SELECT count(*) FROM gone)
"""

_MINUTE_UPSERT = """
INSERT INTO stats_minute_count (minute, messages)
SELECT date_trunc('minute', accepted_at), {sign} * count(*) FROM {source} GROUP BY 1 ORDER BY 1
ON CONFLICT (minute) DO UPDATE SET messages = stats_minute_count.messages + EXCLUDED.messages
"""
# Only the minutes just subtracted from: a primary-key lookup each, not a scan of every minute.
_MINUTE_DELETE = """
DELETE FROM stats_minute_count WHERE messages <= 0
AND minute IN (SELECT date_trunc('minute', accepted_at) FROM {source})
"""

# An upsert rather than an UPDATE of row 1, so the totals survive a TRUNCATE of the table.
_TOTALS_CHANGE = """
INSERT INTO stats_totals AS t (id, messages, states, cities, users, newest_accepted_at, top_users_stale)
SELECT 1, {sign} * count(*), %s, %s, %s, max(accepted_at), %s FROM {source}
ON CONFLICT (id) DO UPDATE SET
    messages = t.messages + EXCLUDED.messages,
    states = t.states + EXCLUDED.states,
    cities = t.cities + EXCLUDED.cities,
    users = t.users + EXCLUDED.users,
    newest_accepted_at = GREATEST(t.newest_accepted_at, {newest}),
    top_users_stale = t.top_users_stale OR EXCLUDED.top_users_stale
"""

CREATE_DELETED_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS messy_deleted (
    username text, city text, state text, accepted_at timestamptz
) ON COMMIT DELETE ROWS
"""


def rollups_add_inserted(cursor: Any) -> None:
    """Add the rows of the temp table messy_inserted (username, city, state, accepted_at) to
    every rollup. Must run inside the transaction that inserted those messages, so messages
    and counts commit together or not at all."""
    created = []
    kept = {"kept": settings.STATS_TOP_USERS_KEPT}
    for table, upsert, _ in _UPSERTS:
        if table == "stats_user_count":
            cursor.execute(_USER_ADD, kept)
            created.append(cursor.fetchone()[0])
        else:
            cursor.execute(upsert.format(sign=1, source="messy_inserted"))
            created.append(sum(1 for (is_new,) in cursor.fetchall() if is_new))
    cursor.execute(_MINUTE_UPSERT.format(sign=1, source="messy_inserted"))
    totals_change = _TOTALS_CHANGE.format(sign=1, source="messy_inserted", newest="EXCLUDED.newest_accepted_at")
    cursor.execute(totals_change, [*created, False])
    cursor.execute(_BOARD_TRIM, kept)


def rollups_subtract_deleted(cursor: Any) -> None:
    """Remove the rows of the temp table messy_deleted (create it with CREATE_DELETED_TABLE)
    from every rollup, dropping rows that reach zero so distinct counts stay right. Must run
    inside the transaction that deleted those messages."""
    removed = []
    board_changed = False
    for table, upsert, delete in _UPSERTS:
        cursor.execute(upsert.format(sign=-1, source="messy_deleted"))
        cursor.execute(delete.format(source="messy_deleted"))
        removed.append(cursor.rowcount)
        if table == "stats_user_count":
            cursor.execute(_BOARD_SUBTRACT)
            board_changed = cursor.fetchone()[0] > 0
    cursor.execute(_MINUTE_UPSERT.format(sign=-1, source="messy_deleted"))
    cursor.execute(_MINUTE_DELETE.format(source="messy_deleted"))
    # The newest accepted time is left as it was: it says when a message last arrived.
    cursor.execute(
        _TOTALS_CHANGE.format(sign=-1, source="messy_deleted", newest="t.newest_accepted_at"),
        [*(-n for n in removed), board_changed],
    )


def top_users_rebuild() -> None:
    """Refill the leaderboard from UserCount (one scan of it): after an erasure lowered a
    leader's count, or a repair.

    Locks the board table first, as a drain would (it touches the board before the totals
    row): drains in flight finish, new ones wait at their board upsert until this commits.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE stats_top_user IN EXCLUSIVE MODE")
        cursor.execute("DELETE FROM stats_top_user")
        cursor.execute(
            "INSERT INTO stats_top_user (username, messages) SELECT username, messages FROM stats_user_count"
            " ORDER BY messages DESC, username LIMIT %s",
            [settings.STATS_TOP_USERS_KEPT],
        )
        cursor.execute("UPDATE stats_totals SET top_users_stale = false WHERE id = 1")


def top_users_rebuild_if_stale() -> bool:
    """Rebuild the leaderboard if an erasure marked it stale; returns whether it did."""
    if not Totals.objects.filter(id=1, top_users_stale=True).exists():
        return False
    top_users_rebuild()
    return True


def rollups_fix() -> list[RollupDifference]:
    """Recompute every rollup from the message table and repair the rows that differ, then
    rebuild the leaderboard from the repaired counts; return the differences found (empty
    when the rollups were right).

    Drains and erasures change messages and rollups in one transaction, so a recount is only
    right if none of them commits while it runs. SHARE mode on the message table waits for the
    ones in flight and holds new ones at their INSERT or DELETE on message, before they touch
    a rollup row; they take that lock first too, so nobody waits in a cycle. They resume when
    this commits. Reads (the publisher, /message/<id>/) are not blocked; writes keep being
    accepted and staged meanwhile. Raises OperationalError if the lock is not granted within
    10 s (nothing has changed then; run it again).
    """
    differences = _rollups_fix_locked()
    top_users_rebuild()
    return differences


def _rollups_fix_locked() -> list[RollupDifference]:
    with transaction.atomic(), connection.cursor() as cursor:
        # Queued behind a long erasure, this lock would hold every drain in the queue behind
        # it: give up instead. Once it is held, the recount takes as long as the scan takes.
        cursor.execute("SET LOCAL lock_timeout = '10s'")
        cursor.execute("LOCK TABLE message IN SHARE MODE")
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(RECOUNT_CREATE)
        differences = rollups_differences_in_transaction(cursor)
        if not differences:
            return differences
        for table, rollup, keys in ROLLUP_TABLES:
            columns = ", ".join(keys)
            matches = " AND ".join(f"r.{key} = t.{key}" for key in keys)
            cursor.execute(
                f"""
                DELETE FROM {table} t WHERE NOT EXISTS (
                    SELECT 1 FROM messy_recount r WHERE r.rollup = %s AND {matches})
                """,  # noqa: S608 (names come from ROLLUP_TABLES, not from input)
                [rollup],
            )
            # In key order, like the drains' upserts.
            cursor.execute(
                f"""
                INSERT INTO {table} AS t ({columns}, messages)
                SELECT {columns}, messages FROM messy_recount WHERE rollup = %s ORDER BY {columns}
                ON CONFLICT ({columns}) DO UPDATE SET messages = EXCLUDED.messages
                WHERE t.messages <> EXCLUDED.messages
                """,  # noqa: S608
                [rollup],
            )
        cursor.execute(_TOTALS_FIX)
    return differences


# An erasure leaves newest_accepted_at as it was (it says when a message last arrived), so it
# is only raised, never lowered.
_TOTALS_FIX = """
INSERT INTO stats_totals AS t (id, messages, users, cities, states, newest_accepted_at, top_users_stale)
SELECT 1,
    (SELECT coalesce(sum(messages), 0) FROM messy_recount WHERE rollup = 'state'),
    (SELECT count(*) FROM messy_recount WHERE rollup = 'user'),
    (SELECT count(*) FROM messy_recount WHERE rollup = 'city'),
    (SELECT count(*) FROM messy_recount WHERE rollup = 'state'),
    (SELECT max(accepted_at) FROM message),
    false
ON CONFLICT (id) DO UPDATE SET
    messages = EXCLUDED.messages,
    users = EXCLUDED.users,
    cities = EXCLUDED.cities,
    states = EXCLUDED.states,
    newest_accepted_at = GREATEST(t.newest_accepted_at, EXCLUDED.newest_accepted_at)
"""

# --- Publishing --------------------------------------------------------------------------------

# Every presigned URL is different (it carries its signing time), so a cache keyed on the URL
# rarely sees it twice; a minute matches how often the blob changes.
BLOB_CACHE_CONTROL = "private, max-age=60"
# A minute's claim outlives the minute, so a late duplicate (a second beat, a redelivered
# task) still finds it.
_CLAIM_TTL_SECONDS = 120

# Deletes the claim only if it is still ours.
_CLAIM_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    published: bool
    generated_at: str | None = None


def publish_claim_key(minute: datetime) -> str:
    return staging.key("stats", "publish", minute.strftime("%Y%m%dT%H%MZ"))


def publish_request_key() -> str:
    return staging.key("stats", "publish-requested")


# Buckets this process has created or checked, with the CORS rules it set on them.
_buckets_prepared: set[tuple[str | None, str, tuple[str, ...]]] = set()


def _bucket_prepare(bucket: str) -> None:
    bucket_ensure(bucket)
    bucket_cors_set(settings.STATS_CORS_ALLOWED_ORIGINS, bucket)


def _blob_upload(body: bytes) -> None:
    """One PUT of the whole object: S3 replaces an object atomically, so a reader gets the old
    blob or the new one, never part of one (a multipart upload would be just as atomic, but
    the blob is a few kilobytes). The bucket is prepared once per process, and again when the
    PUT finds it missing (a new S3 endpoint, a wiped local server)."""
    bucket = settings.S3_BUCKET
    prepared = (settings.S3_ENDPOINT_URL, bucket, tuple(settings.STATS_CORS_ALLOWED_ORIGINS))
    if prepared not in _buckets_prepared:
        _bucket_prepare(bucket)
        _buckets_prepared.add(prepared)
    put = {
        "Bucket": bucket,
        "Key": settings.STATS_BLOB_KEY,
        "Body": body,
        "ContentType": "application/json",
        "CacheControl": BLOB_CACHE_CONTROL,
    }
    try:
        s3_client().put_object(**put)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        _bucket_prepare(bucket)
        s3_client().put_object(**put)


def stats_publish(*, force: bool = False, now: datetime | None = None) -> PublishOutcome:
    """Build the blob from the rollups and upload it to S3, then record in Redis that it is
    there. Runs at most once per calendar minute across every beat and worker: the minute is
    claimed with SET NX first, and a second caller in the same minute returns at once with
    published=False. `force` skips the claim (an operator's republish).

    When building or uploading fails the claim is released, so a retry in the same minute can
    publish, and the error propagates (botocore, redis or database errors): the task decides
    what to retry.
    """
    now = now or timezone.now()
    redis = staging.redis_client()
    claim_key = publish_claim_key(now.replace(second=0, microsecond=0))
    token = uuid.uuid4().hex
    if not force and not redis.set(claim_key, token, nx=True, ex=_CLAIM_TTL_SECONDS):
        return PublishOutcome(published=False)
    try:
        top_users_rebuild_if_stale()
        blob = stats_blob_build(now)
        _blob_upload(stats_blob_encode(blob))
    except BaseException:
        if not force:
            redis.eval(_CLAIM_RELEASE, 1, claim_key, token)
        raise
    marker = {"generated_at": blob["generated_at"], "key": settings.STATS_BLOB_KEY}
    redis.set(published_marker_key(), json.dumps(marker))
    logger.info("published stats blob generated at %s", blob["generated_at"])
    return PublishOutcome(published=True, generated_at=blob["generated_at"])


def stats_republish() -> bool:
    """Publish again now, outside the once-a-minute schedule: after an erasure, so the erased
    user leaves the published top lists without waiting for the next minute. Never raises
    (the beat publishes within a minute anyway); returns whether a task was sent."""
    from stats.tasks import publish_stats

    try:
        publish_stats.apply_async(kwargs={"force": True}, retry=True, retry_policy={"max_retries": 1})
    except Exception:
        logger.warning("could not request a stats republish; the beat schedule will publish", exc_info=True)
        return False
    return True


def stats_publish_request() -> bool:
    """Ask a worker to publish soon (/stat/get/ before the first publish). At most one request
    per STATS_RETRY_AFTER_SECONDS, so a crowd of waiting dashboards sends one task, not one
    each. Never raises: the caller is answering a request. Returns whether a task was sent."""
    from stats.tasks import publish_stats

    try:
        if not staging.redis_client().set(publish_request_key(), "1", nx=True, ex=settings.STATS_RETRY_AFTER_SECONDS):
            return False
        publish_stats.apply_async(retry=True, retry_policy={"max_retries": 1, "interval_start": 0})
    except Exception:
        logger.warning("could not request a stats publish; the beat schedule will publish", exc_info=True)
        return False
    return True
