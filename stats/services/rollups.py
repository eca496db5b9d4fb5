"""The rollups: counts per state, city, user and minute, the leaderboard and the totals row.

The contract with a caller that inserts or deletes messages, inside its own transaction:
1. rollups_added_table_create(cursor) (rollups_removed_table_create(cursor));
2. fill ROLLUPS_ADDED_TABLE (ROLLUPS_REMOVED_TABLE) with (username, city, state, accepted_at)
   of the rows really inserted (deleted), e.g. from INSERT ... RETURNING;
3. rollups_add(cursor) (rollups_subtract(cursor)).
The temp tables are dropped at commit (a pooler in transaction mode may hand the server connection
to another client next). rollups_add(cursor, source) may read any relation with those columns.
Each call adds one PendingRollup row; a fold adds the pending rows into the rollup rows, one
folder at a time. Documented in docs/scaling.md.
"""

import time
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from stats.models import Totals

ROLLUPS_ADDED_TABLE = "messy_inserted"
ROLLUPS_REMOVED_TABLE = "messy_deleted"

# The transaction-level advisory lock held by whoever changes the rollup rows: the fold, the
# leaderboard's rebuild and the repair. Nobody else writes them, so no two writers of rollup
# rows ever wait on each other's row locks; drains only ever try this lock.
FOLD_LOCK = 0x6D657373_7901

_CREATE_CHANGED = """
CREATE TEMP TABLE IF NOT EXISTS {table} (
    username text, city text, state text, accepted_at timestamptz
) ON COMMIT DROP
"""


def rollups_added_table_create(cursor: Any) -> None:
    """Create ROLLUPS_ADDED_TABLE for this transaction if it is missing (one cheap statement)."""
    cursor.execute(_CREATE_CHANGED.format(table=ROLLUPS_ADDED_TABLE))


def rollups_removed_table_create(cursor: Any) -> None:
    """Create ROLLUPS_REMOVED_TABLE for this transaction if it is missing (one cheap statement)."""
    cursor.execute(_CREATE_CHANGED.format(table=ROLLUPS_REMOVED_TABLE))


# One row for the whole change: a hash aggregate per rollup over the batch's rows, into parallel
# arrays. An insert of a new row locks nothing another drain holds.
_PENDING_INSERT = """
WITH src AS MATERIALIZED (SELECT username, city, state, accepted_at FROM {source}),
by_state AS (
    SELECT array_agg(state) AS k, array_agg(n) AS n
    FROM (SELECT state, {sign} * count(*) AS n FROM src GROUP BY state) g
), by_city AS (
    SELECT array_agg(state) AS s, array_agg(city) AS k, array_agg(n) AS n
    FROM (SELECT state, city, {sign} * count(*) AS n FROM src GROUP BY state, city) g
), by_user AS (
    SELECT array_agg(username) AS k, array_agg(n) AS n
    FROM (SELECT username, {sign} * count(*) AS n FROM src GROUP BY username) g
), by_minute AS (
    SELECT array_agg(minute) AS k, array_agg(n) AS n
    FROM (SELECT date_trunc('minute', accepted_at) AS minute, {sign} * count(*) AS n FROM src GROUP BY 1) g
)
INSERT INTO stats_pending_rollup (
    messages, newest_accepted_at, states, state_counts, city_states, cities, city_counts,
    users, user_counts, minutes, minute_counts
)
SELECT {sign} * (SELECT count(*) FROM src), {newest}, s.k, s.n, c.s, c.k, c.n, u.k, u.n, m.k, m.n
FROM by_state s, by_city c, by_user u, by_minute m
WHERE s.k IS NOT NULL
"""

# --- the fold ---------------------------------------------------------------------------------
# Run only by the holder of FOLD_LOCK. The pending rows this statement sees are taken (deleted)
# into a temp table in the same transaction that adds them: committed together or not at all,
# so each is added exactly once. A row committed meanwhile is left for the next fold.
_FOLD_TAKE = """
CREATE TEMP TABLE IF NOT EXISTS messy_fold_state (state text, n bigint) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS messy_fold_city (state text, city text, n bigint) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS messy_fold_user (username text, n bigint) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS messy_fold_minute (minute timestamptz, n bigint) ON COMMIT DROP;
-- Empty if an earlier fold of this transaction left rows (a caller's transaction may fold twice).
DELETE FROM messy_fold_state; DELETE FROM messy_fold_city; DELETE FROM messy_fold_user; DELETE FROM messy_fold_minute;
WITH taken AS MATERIALIZED (DELETE FROM stats_pending_rollup RETURNING *),
by_state AS (
    INSERT INTO messy_fold_state SELECT k, sum(n) FROM taken, unnest(states, state_counts) u(k, n) GROUP BY k
), by_city AS (
    INSERT INTO messy_fold_city
    SELECT s, k, sum(n) FROM taken, unnest(city_states, cities, city_counts) u(s, k, n) GROUP BY s, k
), by_user AS (
    INSERT INTO messy_fold_user SELECT k, sum(n) FROM taken, unnest(users, user_counts) u(k, n) GROUP BY k
), by_minute AS (
    INSERT INTO messy_fold_minute SELECT k, sum(n) FROM taken, unnest(minutes, minute_counts) u(k, n) GROUP BY k
)
SELECT count(*), coalesce(bool_or(messages < 0), false), coalesce(sum(messages), 0), max(newest_accepted_at)
FROM taken
"""

# Per rollup: the net change per key (a key can only have gone down if a pending row
# subtracted), the upsert (RETURNING (xmax = 0) is true for rows it inserted: new states,
# cities, users), then, if anything was subtracted, the rows that reached zero are deleted, so
# a distinct count is the number of rows. In no particular order: the fold is the only writer
# of these rows (it holds FOLD_LOCK), so no other transaction can wait for it in a cycle.
_UPSERT = """
WITH upserted AS (
    INSERT INTO {table} AS t ({keys}, messages)
    SELECT {keys}, n FROM messy_fold_{name} WHERE n <> 0
    ON CONFLICT ({keys}) DO UPDATE SET messages = t.messages + EXCLUDED.messages
    RETURNING (xmax = 0) AS created
)
SELECT count(*) FILTER (WHERE created) FROM upserted
"""
_DELETE_ZERO = (
    "DELETE FROM {table} WHERE messages <= 0 AND ({keys}) IN (SELECT {keys} FROM messy_fold_{name} WHERE n < 0)"
)
_TABLES = (
    ("state", "stats_state_count", "state"),
    ("city", "stats_city_count", "state, city"),
    ("user", "stats_user_count", "username"),
    ("minute", "stats_minute_count", "minute"),
)

# The user upsert also puts every user who now ranks on the leaderboard onto it (see
# stats.models.TopUser). A board row below the last place may keep an old
# count: it was not updated because it ranked below, and stays below until its next update.
_USER_UPSERT = """
WITH upserted AS (
    INSERT INTO stats_user_count AS t (username, messages)
    SELECT username, n FROM messy_fold_user WHERE n <> 0
    ON CONFLICT (username) DO UPDATE SET messages = t.messages + EXCLUDED.messages
    RETURNING username, messages, (xmax = 0) AS created
), last_place AS (
    -- Rank STATS_TOP_USERS_KEPT (none while the board has fewer users).
    SELECT messages, username FROM stats_top_user ORDER BY messages DESC, username OFFSET %(kept)s - 1 LIMIT 1
), contenders AS (
    -- Only the fold's own first %(kept)s can rank among the first %(kept)s of all.
    SELECT username, messages FROM upserted WHERE messages > 0 ORDER BY messages DESC, username LIMIT %(kept)s
), onto_board AS (
    -- Users who now rank at or above the last place, in the board's order (more messages
    -- first, then username): a tie with the last place that sorts after it stays off.
    INSERT INTO stats_top_user (username, messages)
    SELECT u.username, u.messages FROM contenders u LEFT JOIN last_place l ON true
    WHERE l.username IS NULL OR u.messages > l.messages OR (u.messages = l.messages AND u.username <= l.username)
    ON CONFLICT (username) DO UPDATE SET messages = EXCLUDED.messages
)
SELECT count(*) FILTER (WHERE created) FROM upserted
"""

# Users below the last place are dropped once they are as many as the places, not at every
# fold: the board is a superset of the top, and trimming costs a sort of it.
_BOARD_TRIM = """
DELETE FROM stats_top_user WHERE (SELECT count(*) FROM stats_top_user) > 2 * %(kept)s
AND username IN (SELECT username FROM stats_top_user ORDER BY messages DESC, username OFFSET %(kept)s)
"""

# After a subtraction: the lowered users' board rows follow their new counts (or leave with
# them). Someone outside the board may now overtake: the board is then marked stale.
_BOARD_SUBTRACT = """
WITH lowered AS (
    UPDATE stats_top_user t SET messages = u.messages FROM stats_user_count u
    WHERE t.username = u.username AND t.username IN (SELECT username FROM messy_fold_user WHERE n < 0)
    RETURNING 1
), gone AS (
    DELETE FROM stats_top_user t
    WHERE t.username IN (SELECT username FROM messy_fold_user WHERE n < 0)
    AND NOT EXISTS (SELECT 1 FROM stats_user_count u WHERE u.username = t.username)
    RETURNING 1
)
SELECT (SELECT count(*) FROM lowered) + (SELECT count(*) FROM gone)
"""

# An upsert rather than an UPDATE of row 1, so the totals survive a TRUNCATE of the table. An
# erasure's pending row has no newest time: it says when a message last arrived.
_TOTALS_CHANGE = """
INSERT INTO stats_totals AS t (id, messages, states, cities, users, newest_accepted_at, top_users_stale)
VALUES (1, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    messages = t.messages + EXCLUDED.messages,
    states = t.states + EXCLUDED.states,
    cities = t.cities + EXCLUDED.cities,
    users = t.users + EXCLUDED.users,
    newest_accepted_at = GREATEST(t.newest_accepted_at, EXCLUDED.newest_accepted_at),
    top_users_stale = t.top_users_stale OR EXCLUDED.top_users_stale
"""

_LOCK_WAIT = f"SELECT pg_advisory_xact_lock({FOLD_LOCK});"

# When this process last tried to fold (time.monotonic()), and whether a batch of its own has
# been left pending since its last fold.
_last_fold_try = float("-inf")
_left_pending = False


def rollups_fold_locked(cursor: Any, before: str = "", params: Any = None) -> int:
    """Add every pending row this statement sees to the rollup rows and delete it, in the
    caller's transaction, which must hold FOLD_LOCK (or take it in `before`, statements sent
    in the same round trip). Returns how many pending rows it took."""
    global _left_pending
    cursor.execute(before + _FOLD_TAKE, params)
    _left_pending = False
    taken, subtracted, messages, newest = cursor.fetchone()
    if not taken:
        return 0
    kept = {"kept": settings.STATS_TOP_USERS_KEPT}
    changes = {}
    board_changed = False
    for name, table, keys in _TABLES:
        if name == "user":
            cursor.execute(_USER_UPSERT, kept)
        else:
            cursor.execute(_UPSERT.format(name=name, table=table, keys=keys))
        changes[name] = cursor.fetchone()[0]
        if subtracted:
            cursor.execute(_DELETE_ZERO.format(name=name, table=table, keys=keys))
            changes[name] -= cursor.rowcount
            if name == "user":
                cursor.execute(_BOARD_SUBTRACT)
                board_changed = cursor.fetchone()[0] > 0
    totals = [messages, changes["state"], changes["city"], changes["user"], newest, board_changed]
    cursor.execute(_TOTALS_CHANGE, totals)
    cursor.execute(_BOARD_TRIM, kept)
    return int(taken)


def _fold_if_free(cursor: Any) -> None:
    """Fold now unless another transaction is folding (it holds FOLD_LOCK): never waits."""
    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLD_LOCK])
    if cursor.fetchone()[0]:
        rollups_fold_locked(cursor)


def rollups_add(cursor: Any, source: str = ROLLUPS_ADDED_TABLE, *, defer: bool = False) -> None:
    """Add the rows of the temp table ROLLUPS_ADDED_TABLE (or of `source`, a relation with its
    columns) to the rollups, in the transaction that inserted those messages: messages and
    counts commit together or not at all.

    The change goes in as one pending row. Then it is folded into the rollup rows: at once,
    waiting for a fold in flight to finish (the default: an import, a last batch), or, with
    `defer` (a drain with more behind this batch), only if STATS_ROLLUP_FOLD_SECONDS have passed
    since this process last tried and no other transaction is folding: a drain never waits.
    """
    global _last_fold_try, _left_pending
    pending_insert = _PENDING_INSERT.format(source=source, sign=1, newest="(SELECT max(accepted_at) FROM src)")
    if not defer:
        rollups_fold_locked(cursor, pending_insert + ";" + _LOCK_WAIT)
        return
    cursor.execute(pending_insert)
    _left_pending = True
    now = time.monotonic()
    if now - _last_fold_try >= settings.STATS_ROLLUP_FOLD_SECONDS:
        _last_fold_try = now
        _fold_if_free(cursor)


def rollups_subtract(cursor: Any) -> None:
    """Remove the rows of the temp table ROLLUPS_REMOVED_TABLE from every rollup, dropping rows
    that reach zero so distinct counts stay right, in the transaction that deleted those
    messages. Folds at once (waiting for a fold in flight), so an erasure leaves the counts
    exact when it commits."""
    pending_insert = _PENDING_INSERT.format(source=ROLLUPS_REMOVED_TABLE, sign=-1, newest="NULL::timestamptz")
    rollups_fold_locked(cursor, pending_insert + ";" + _LOCK_WAIT)


def rollups_fold_wait(cursor: Any) -> int:
    """Take FOLD_LOCK, waiting for a fold in flight, and fold, in the caller's transaction."""
    return rollups_fold_locked(cursor, _LOCK_WAIT)


def rollups_fold() -> int:
    """Fold every pending row in a transaction of its own (a publish, a benchmark's end);
    returns how many pending rows it took."""
    with transaction.atomic(), connection.cursor() as cursor:
        return rollups_fold_wait(cursor)


def rollups_fold_if_left_pending() -> None:
    """Fold if a batch of this process's has waited pending since its last fold: a drain that
    found its stream empty, so counts never wait for the next batch or publish."""
    if _left_pending:
        rollups_fold()


def top_users_rebuild() -> None:
    """Refill the leaderboard from UserCount (one scan of it): after an erasure lowered a
    leader's count, or a repair. Holds FOLD_LOCK, so no fold changes counts meanwhile."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
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
