"""The rollups: counts per state, city, user and minute, the leaderboard and the totals row,
kept by set-based upserts in the transactions that store or erase messages.

The contract with a caller that inserts or deletes messages, inside its own transaction:
1. rollups_added_table_create(cursor) (rollups_removed_table_create(cursor));
2. fill ROLLUPS_ADDED_TABLE (ROLLUPS_REMOVED_TABLE) with (username, city, state, accepted_at)
   of the rows really inserted (deleted), e.g. from INSERT ... RETURNING;
3. rollups_add(cursor) (rollups_subtract(cursor)).
The temp tables are dropped at commit: nothing outlives a transaction on a server connection that
a pooler (PgBouncer in transaction mode) hands to another client next. A caller that knows every
row it copied was inserted may skip the temp table: rollups_add(cursor, source) reads any relation with those
columns (a parenthesised, aliased subquery of its own temp table). Lock order: the caller's message rows first, then
the rollups, as rollups_fix expects.
"""

from typing import Any

from django.conf import settings
from django.db import connection, transaction

from stats.models import Totals

ROLLUPS_ADDED_TABLE = "messy_inserted"
ROLLUPS_REMOVED_TABLE = "messy_deleted"

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
    SELECT username, count(*) FROM {added} GROUP BY username ORDER BY username
    ON CONFLICT (username) DO UPDATE SET messages = stats_user_count.messages + EXCLUDED.messages
    RETURNING username, messages, (xmax = 0) AS created
), last_place AS (
    -- Rank STATS_TOP_USERS_KEPT (none while the board has fewer users).
    SELECT messages, username FROM stats_top_user ORDER BY messages DESC, username OFFSET %(kept)s - 1 LIMIT 1
), contenders AS (
    -- Only the batch's own first %(kept)s can rank among the first %(kept)s of all: any other
    -- user of the batch has that many of the batch above them. (Without this, users who all
    -- write at about the same rate enter the board by the thousand each batch, to be trimmed.)
    SELECT username, messages FROM upserted ORDER BY messages DESC, username LIMIT %(kept)s
), onto_board AS (
    -- Users who now rank at or above the last place, in the board's order (more messages
    -- first, then username): a tie with the last place that sorts after it stays off.
    INSERT INTO stats_top_user (username, messages)
    SELECT u.username, u.messages FROM contenders u LEFT JOIN last_place l ON true
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
    WHERE t.username = u.username AND t.username IN (SELECT username FROM {removed})
    RETURNING 1
), gone AS (
    DELETE FROM stats_top_user t
    WHERE t.username IN (SELECT username FROM {removed})
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


def rollups_add(cursor: Any, source: str = ROLLUPS_ADDED_TABLE) -> None:
    """Add the rows of the temp table ROLLUPS_ADDED_TABLE (or of `source`, a relation with its
    columns) to every rollup. Run it inside the transaction that inserted those messages, so
    messages and counts commit together or not at all."""
    created = []
    kept = {"kept": settings.STATS_TOP_USERS_KEPT}
    for table, upsert, _ in _UPSERTS:
        if table == "stats_user_count":
            cursor.execute(_USER_ADD.format(added=source), kept)
            created.append(cursor.fetchone()[0])
        else:
            cursor.execute(upsert.format(sign=1, source=source))
            created.append(sum(1 for (is_new,) in cursor.fetchall() if is_new))
    cursor.execute(_MINUTE_UPSERT.format(sign=1, source=source))
    totals_change = _TOTALS_CHANGE.format(sign=1, source=source, newest="EXCLUDED.newest_accepted_at")
    cursor.execute(totals_change, [*created, False])
    cursor.execute(_BOARD_TRIM, kept)


def rollups_subtract(cursor: Any) -> None:
    """Remove the rows of the temp table ROLLUPS_REMOVED_TABLE from every rollup, dropping rows
    that reach zero so distinct counts stay right. Run it inside the transaction that deleted
    those messages."""
    removed = []
    board_changed = False
    for table, upsert, delete in _UPSERTS:
        cursor.execute(upsert.format(sign=-1, source=ROLLUPS_REMOVED_TABLE))
        cursor.execute(delete.format(source=ROLLUPS_REMOVED_TABLE))
        removed.append(cursor.rowcount)
        if table == "stats_user_count":
            cursor.execute(_BOARD_SUBTRACT.format(removed=ROLLUPS_REMOVED_TABLE))
            board_changed = cursor.fetchone()[0] > 0
    cursor.execute(_MINUTE_UPSERT.format(sign=-1, source=ROLLUPS_REMOVED_TABLE))
    cursor.execute(_MINUTE_DELETE.format(source=ROLLUPS_REMOVED_TABLE))
    # The newest accepted time is left as it was: it says when a message last arrived.
    cursor.execute(
        _TOTALS_CHANGE.format(sign=-1, source=ROLLUPS_REMOVED_TABLE, newest="t.newest_accepted_at"),
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
