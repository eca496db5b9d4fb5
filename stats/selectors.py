"""Functions that read statistics: the blob, and where readers find it.

The blob is built from the rollup tables only: one primary-key read of the totals row and
four index scans bounded by a LIMIT or a time range. Nothing here reads the message table,
so building the blob costs the same at ten million messages as at ten thousand.
Documented in docs/stats.md.
"""

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from project.http import timestamp
from project.redis import key, redis_client
from project.storage import presigned_get_url
from stats.models import CityCount, MinuteCount, StateCount, TopUser, Totals
from stats.services.rollups import FOLD_LOCK, rollups_fold_locked

# Readers check this before anything else; raise it when the blob's shape changes in a way
# an old reader would misread (adding a key is not such a change).
SCHEMA_VERSION = 1


def published_marker_key() -> str:
    """Redis key set once a blob is in S3: lets /stat/get/ redirect without asking S3 or PostgreSQL."""
    return key("stats", "published")


def timeline_window(now: datetime) -> tuple[datetime, datetime]:
    """The first and last minute of the timeline: the last STATS_TIMELINE_MINUTES minutes,
    including the current (partial) one."""
    last = now.replace(second=0, microsecond=0)
    return last - timedelta(minutes=settings.STATS_TIMELINE_MINUTES - 1), last


def stats_blob_shape(
    now: datetime,
    totals: dict[str, int],
    newest: datetime | None,
    states: Iterable[Mapping[str, Any]],
    cities: Iterable[Mapping[str, Any]],
    users: Iterable[Mapping[str, Any]],
    minute_counts: dict[datetime, int],
) -> dict[str, Any]:
    """The blob from its parts: the one place that says what a blob holds and how."""
    first, _ = timeline_window(now)
    minutes = (first + timedelta(minutes=i) for i in range(settings.STATS_TIMELINE_MINUTES))
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": timestamp(now),
        "totals": totals,
        "newest_message_at": timestamp(newest),
        "states": list(states),
        "top_cities": list(cities),
        "top_users": list(users),
        # Oldest first; minutes without messages count zero.
        "timeline": [{"minute": timestamp(minute), "messages": minute_counts.get(minute, 0)} for minute in minutes],
    }


def _read(now: datetime) -> dict[str, Any]:
    totals = Totals.objects.filter(id=1).first() or Totals()
    first, last = timeline_window(now)
    minutes = MinuteCount.objects.filter(minute__gte=first, minute__lte=last).order_by("minute")
    return stats_blob_shape(
        now,
        {"messages": totals.messages, "users": totals.users, "cities": totals.cities, "states": totals.states},
        totals.newest_accepted_at,
        StateCount.objects.order_by("-messages", "state").values("state", "messages")[: settings.STATS_STATES_MAX],
        CityCount.objects.order_by("-messages", "state", "city").values("state", "city", "messages")[
            : settings.STATS_TOP_CITIES
        ],
        TopUser.objects.order_by("-messages", "username").values("username", "messages")[: settings.STATS_TOP_USERS],
        dict(minutes.values_list("minute", "messages")),
    )


def stats_blob_build(now: datetime | None = None) -> dict[str, Any]:
    """The stats blob as a JSON-ready dict.

    Read in one REPEATABLE READ snapshot, so the totals, per-state counts and timeline agree
    with each other (a drain committing between two of the reads cannot make them differ).
    Inside a caller's transaction it reads in that transaction instead.
    """
    now = now or timezone.now()
    if connection.in_atomic_block:
        return _read(now)
    with transaction.atomic(), connection.cursor() as cursor:
        # Must be the transaction's first statement.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _read(now)


def stats_blob_encode(blob: dict[str, Any]) -> bytes:
    return json.dumps(blob, ensure_ascii=False, separators=(",", ":")).encode()


# The minute rollup and the pending counts not yet folded into it, read in one statement.
_ACCEPTED_BEFORE = """
SELECT coalesce(sum(n), 0) FROM (
    SELECT messages AS n FROM stats_minute_count WHERE minute < %(minute)s
    UNION ALL
    SELECT n FROM stats_pending_rollup, unnest(minutes, minute_counts) u(k, n) WHERE k < %(minute)s
) counted
"""


def messages_accepted_before(minute: datetime) -> int:
    """How many stored messages were accepted before `minute` (the start of a minute), from the
    minute rollup and the pending counts: exact while the rollups are, and a scan of a row per
    minute, not of the message table."""
    with connection.cursor() as cursor:
        cursor.execute(_ACCEPTED_BEFORE, {"minute": minute})
        return int(cursor.fetchone()[0])


def stats_published() -> dict[str, Any] | None:
    """What the last publish recorded in Redis ({"generated_at", "key"}), or None before the
    first publish. One Redis GET: no database query, no S3 call. Raises redis.RedisError."""
    # The client is synchronous; redis-py's stubs also allow the asyncio client's Awaitable.
    raw = cast(bytes | None, redis_client().get(published_marker_key()))
    return json.loads(raw) if raw else None


def stats_blob_url() -> str:
    """A short-lived presigned GET URL of the published blob (signed locally, no S3 call). The
    key comes from the settings only, never from the marker: whoever can write to Redis must
    not be able to have a public redirect sign another object (an import upload)."""
    return presigned_get_url(settings.STATS_BLOB_KEY, settings.STATS_URL_EXPIRY_SECONDS)


# --- Recount -----------------------------------------------------------------------------------

# The relation the rollups count (username, city, state, accepted_at), named by the app that owns
# it (messages, from its AppConfig.ready()), as rollups_add's source is: stats names no table of
# another app.
_recount_source = ""


def recount_source_register(relation: str) -> None:
    global _recount_source
    _recount_source = relation


def recount_source() -> str:
    if not _recount_source:
        raise ImproperlyConfigured("no app registered the relation the rollups count (recount_source_register)")
    return _recount_source


# (table, rollup name in messy_recount, key columns)
ROLLUP_TABLES = (
    ("stats_state_count", "state", ("state",)),
    ("stats_city_count", "city", ("state", "city")),
    ("stats_user_count", "user", ("username",)),
    ("stats_minute_count", "minute", ("minute",)),
)

# Every rollup recomputed from recount_source() in one scan (one hash aggregate per
# grouping set). The minute is truncated in the session's time zone, UTC, as the drains do.
RECOUNT_CREATE = """
DROP TABLE IF EXISTS pg_temp.messy_recount;
CREATE TEMP TABLE messy_recount ON COMMIT DROP AS
SELECT
    -- A bit per argument, first argument highest, set when it is not in the grouping set.
    CASE GROUPING(state, city, username, minute)
        WHEN 7 THEN 'state' WHEN 3 THEN 'city' WHEN 13 THEN 'user' WHEN 14 THEN 'minute'
    END AS rollup,
    state, city, username, minute, count(*) AS messages
FROM (SELECT state, city, username, date_trunc('minute', accepted_at) AS minute FROM {source}) m
GROUP BY GROUPING SETS ((state), (state, city), (username), (minute))
"""

# The totals row recomputed from messy_recount (and the newest time of recount_source()).
TOTALS_RECOUNT = """
SELECT
    (SELECT coalesce(sum(messages), 0) FROM messy_recount WHERE rollup = 'state') AS messages,
    (SELECT count(*) FROM messy_recount WHERE rollup = 'user') AS users,
    (SELECT count(*) FROM messy_recount WHERE rollup = 'city') AS cities,
    (SELECT count(*) FROM messy_recount WHERE rollup = 'state') AS states,
    (SELECT max(accepted_at) FROM {source}) AS newest_accepted_at
"""


@dataclass(frozen=True, slots=True)
class RollupDifference:
    table: str
    key: str
    expected: Any
    found: Any

    def __str__(self) -> str:
        return f"{self.table} {self.key}: expected {self.expected}, found {self.found}"


def rollups_differences_in_transaction(cursor: Any) -> list[RollupDifference]:
    """Compare the rollups with messy_recount (RECOUNT_CREATE, run by the caller in the same
    transaction). Rows missing on either side show as None."""
    differences = []
    for table, rollup, keys in ROLLUP_TABLES:
        matches = " AND ".join(f"r.{key} = t.{key}" for key in keys)
        key_values = ", ".join(f"coalesce(r.{key}, t.{key})" for key in keys)
        cursor.execute(
            f"""
            SELECT {key_values}, r.messages, t.messages
            FROM (SELECT * FROM messy_recount WHERE rollup = %s) r FULL JOIN {table} t ON {matches}
            WHERE r.messages IS DISTINCT FROM t.messages
            ORDER BY {key_values}
            """,  # noqa: S608 (names come from ROLLUP_TABLES, not from input)
            [rollup],
        )
        for row in cursor.fetchall():
            key = " ".join(f"{name}={value!r}" for name, value in zip(keys, row, strict=False))
            differences.append(RollupDifference(table, key, row[-2], row[-1]))
    cursor.execute(TOTALS_RECOUNT.format(source=recount_source()))
    expected = cursor.fetchone()
    totals = Totals.objects.filter(id=1).first()
    found = (totals.messages, totals.users, totals.cities, totals.states, totals.newest_accepted_at) if totals else None
    names = ("messages", "users", "cities", "states")
    for index, name in enumerate(names):
        if found is None or found[index] != expected[index]:
            differences.append(RollupDifference("stats_totals", name, expected[index], found and found[index]))
    # Erasures leave the newest time as it was, so only an older one is wrong.
    newest_expected, newest_found = expected[4], found[4] if found else None
    if newest_expected is not None and (newest_found is None or newest_found < newest_expected):
        differences.append(RollupDifference("stats_totals", "newest_accepted_at", newest_expected, newest_found))
    return differences


def rollups_differences(timeout: float = 60.0) -> list[RollupDifference]:
    """Every difference between the rollups and a recount of the message table, read in one
    snapshot (rollups and pending counts commit with their messages, so a snapshot's recount
    must match exactly, whatever drains are running). Scans the whole message table once.

    The snapshot's pending counts are folded first, in the same transaction, which is rolled
    back: the check changes nothing. It needs FOLD_LOCK free when its snapshot is taken, so it
    tries again (for up to `timeout` seconds) while drains are folding."""
    if connection.in_atomic_block:  # a caller's transaction (tests): fold and read in it
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
            return _differences_after_fold(cursor)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # The first statement takes the snapshot: a lock waited for would leave it
                # older than the fold that held it (a serialisation failure at the fold).
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLD_LOCK])
                if cursor.fetchone()[0]:
                    differences = _differences_after_fold(cursor)
                    transaction.set_rollback(True)
                    return differences
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) != "40001" or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise OperationalError("rollups_differences: the rollups were being folded throughout")
        time.sleep(0.02)


def _differences_after_fold(cursor: Any) -> list[RollupDifference]:
    rollups_fold_locked(cursor)
    # An operator's check: it takes as long as a scan of the messages takes.
    cursor.execute("SET LOCAL statement_timeout = 0")
    cursor.execute(RECOUNT_CREATE.format(source=recount_source()))
    return rollups_differences_in_transaction(cursor)
