"""Functions that change statistics: rollup maintenance."""

from typing import Any

# Each upsert takes its row locks in key order (ORDER BY), and every transaction touches
# the tables in the same order (state, city, user, minute, totals), so concurrent drains
# wait for each other but never deadlock. The single totals row is updated last, so it is
# held only for the moment before commit. RETURNING (xmax = 0) is true for rows the upsert
# inserted rather than updated: that is how new users, cities and states are counted.
_ROLLUP_UPSERTS = (
    """
    INSERT INTO stats_state_count (state, messages)
    SELECT state, count(*) FROM messy_inserted GROUP BY state ORDER BY state
    ON CONFLICT (state) DO UPDATE SET messages = stats_state_count.messages + EXCLUDED.messages
    RETURNING (xmax = 0)
    """,
    """
    INSERT INTO stats_city_count (state, city, messages)
    SELECT state, city, count(*) FROM messy_inserted GROUP BY state, city ORDER BY state, city
    ON CONFLICT (state, city) DO UPDATE SET messages = stats_city_count.messages + EXCLUDED.messages
    RETURNING (xmax = 0)
    """,
    """
    INSERT INTO stats_user_count (username, messages)
    SELECT username, count(*) FROM messy_inserted GROUP BY username ORDER BY username
    ON CONFLICT (username) DO UPDATE SET messages = stats_user_count.messages + EXCLUDED.messages
    RETURNING (xmax = 0)
    """,
)

_MINUTE_UPSERT = """
INSERT INTO stats_minute_count (minute, messages)
SELECT date_trunc('minute', accepted_at), count(*) FROM messy_inserted GROUP BY 1 ORDER BY 1
ON CONFLICT (minute) DO UPDATE SET messages = stats_minute_count.messages + EXCLUDED.messages
"""

_TOTALS_UPDATE = """
UPDATE stats_totals SET
    messages = messages + (SELECT count(*) FROM messy_inserted),
    states = states + %s,
    cities = cities + %s,
    users = users + %s,
    newest_accepted_at = GREATEST(newest_accepted_at, (SELECT max(accepted_at) FROM messy_inserted))
WHERE id = 1
"""


def rollups_add_inserted(cursor: Any) -> None:
    """Add the rows of the temp table messy_inserted to every rollup.

    Must run inside the transaction that inserted those messages, so the messages and their
    counts commit together or not at all.
    """
    created = []
    for upsert in _ROLLUP_UPSERTS:
        cursor.execute(upsert)
        created.append(sum(1 for (is_new,) in cursor.fetchall() if is_new))
    cursor.execute(_MINUTE_UPSERT)
    cursor.execute(_TOTALS_UPDATE, created)


# Subtraction takes locks in the same table and key order as addition (see above).
_ROLLUP_SUBTRACTS = (
    (
        """
        UPDATE stats_state_count AS r SET messages = r.messages - d.n
        FROM (SELECT state, count(*) AS n FROM messy_deleted GROUP BY state ORDER BY state) AS d
        WHERE r.state = d.state
        """,
        "DELETE FROM stats_state_count WHERE messages <= 0 AND state IN (SELECT state FROM messy_deleted)",
    ),
    (
        """
        UPDATE stats_city_count AS r SET messages = r.messages - d.n
        FROM (SELECT state, city, count(*) AS n FROM messy_deleted GROUP BY state, city ORDER BY state, city) AS d
        WHERE r.state = d.state AND r.city = d.city
        """,
        """
        DELETE FROM stats_city_count WHERE messages <= 0
        AND (state, city) IN (SELECT state, city FROM messy_deleted)
        """,
    ),
    (
        """
        UPDATE stats_user_count AS r SET messages = r.messages - d.n
        FROM (SELECT username, count(*) AS n FROM messy_deleted GROUP BY username ORDER BY username) AS d
        WHERE r.username = d.username
        """,
        "DELETE FROM stats_user_count WHERE messages <= 0 AND username IN (SELECT username FROM messy_deleted)",
    ),
)

_MINUTE_SUBTRACT = """
UPDATE stats_minute_count AS r SET messages = r.messages - d.n
FROM (SELECT date_trunc('minute', accepted_at) AS minute, count(*) AS n FROM messy_deleted GROUP BY 1 ORDER BY 1) AS d
WHERE r.minute = d.minute
"""

_TOTALS_SUBTRACT = """
UPDATE stats_totals SET
    messages = messages - (SELECT count(*) FROM messy_deleted),
    states = states - %s,
    cities = cities - %s,
    users = users - %s
WHERE id = 1
"""

CREATE_DELETED_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS messy_deleted (
    username text, city text, state text, accepted_at timestamptz
) ON COMMIT DELETE ROWS
"""


def rollups_subtract_deleted(cursor: Any) -> None:
    """Remove the rows of the temp table messy_deleted (CREATE_DELETED_TABLE) from every
    rollup, dropping rows that reach zero so distinct counts stay right.

    Must run inside the transaction that deleted those messages.
    """
    removed = []
    for update, delete in _ROLLUP_SUBTRACTS:
        cursor.execute(update)
        cursor.execute(delete)
        removed.append(cursor.rowcount)
    cursor.execute(_MINUTE_SUBTRACT)
    cursor.execute("DELETE FROM stats_minute_count WHERE messages <= 0")
    cursor.execute(_TOTALS_SUBTRACT, removed)
