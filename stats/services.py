"""Functions that change statistics: rollup maintenance."""

from typing import Any

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

_MINUTE_UPSERT = """
INSERT INTO stats_minute_count (minute, messages)
SELECT date_trunc('minute', accepted_at), {sign} * count(*) FROM {source} GROUP BY 1 ORDER BY 1
ON CONFLICT (minute) DO UPDATE SET messages = stats_minute_count.messages + EXCLUDED.messages
"""
_MINUTE_DELETE = "DELETE FROM stats_minute_count WHERE messages <= 0"

# An upsert rather than an UPDATE of row 1, so the totals survive a TRUNCATE of the table.
_TOTALS_CHANGE = """
INSERT INTO stats_totals AS t (id, messages, states, cities, users, newest_accepted_at)
SELECT 1, {sign} * count(*), %s, %s, %s, max(accepted_at) FROM {source}
ON CONFLICT (id) DO UPDATE SET
    messages = t.messages + EXCLUDED.messages,
    states = t.states + EXCLUDED.states,
    cities = t.cities + EXCLUDED.cities,
    users = t.users + EXCLUDED.users,
    newest_accepted_at = GREATEST(t.newest_accepted_at, {newest})
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
    for _, upsert, _ in _UPSERTS:
        cursor.execute(upsert.format(sign=1, source="messy_inserted"))
        created.append(sum(1 for (is_new,) in cursor.fetchall() if is_new))
    cursor.execute(_MINUTE_UPSERT.format(sign=1, source="messy_inserted"))
    cursor.execute(_TOTALS_CHANGE.format(sign=1, source="messy_inserted", newest="EXCLUDED.newest_accepted_at"), created)


def rollups_subtract_deleted(cursor: Any) -> None:
    """Remove the rows of the temp table messy_deleted (create it with CREATE_DELETED_TABLE)
    from every rollup, dropping rows that reach zero so distinct counts stay right. Must run
    inside the transaction that deleted those messages."""
    removed = []
    for _, upsert, delete in _UPSERTS:
        cursor.execute(upsert.format(sign=-1, source="messy_deleted"))
        cursor.execute(delete.format(source="messy_deleted"))
        removed.append(cursor.rowcount)
    cursor.execute(_MINUTE_UPSERT.format(sign=-1, source="messy_deleted"))
    cursor.execute(_MINUTE_DELETE)
    # The newest accepted time is left as it was: it says when a message last arrived.
    cursor.execute(
        _TOTALS_CHANGE.format(sign=-1, source="messy_deleted", newest="t.newest_accepted_at"), [-n for n in removed]
    )
