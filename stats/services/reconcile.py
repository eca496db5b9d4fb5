"""Repairing the rollups from a recount of the message table.

Documented in docs/stats.md.
"""

from django.db import connection, transaction

from stats.selectors import (
    RECOUNT_CREATE,
    ROLLUP_TABLES,
    TOTALS_RECOUNT,
    RollupDifference,
    recount_source,
    rollups_differences_in_transaction,
)
from stats.services.rollups import rollups_fold_wait, top_users_rebuild


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
        source = recount_source()
        cursor.execute(f"LOCK TABLE {source} IN SHARE MODE")
        # Then the rollup rows' own lock, and the pending counts into them: what is compared.
        rollups_fold_wait(cursor)
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(RECOUNT_CREATE.format(source=source))
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
        cursor.execute(_TOTALS_FIX.format(source=source))
    return differences


# An erasure leaves newest_accepted_at as it was (it says when a message last arrived), so it
# is only raised, never lowered.
_TOTALS_FIX = f"""
INSERT INTO stats_totals AS t (id, messages, users, cities, states, newest_accepted_at, top_users_stale)
SELECT 1, r.messages, r.users, r.cities, r.states, r.newest_accepted_at, false FROM ({TOTALS_RECOUNT}) r
ON CONFLICT (id) DO UPDATE SET
    messages = EXCLUDED.messages,
    users = EXCLUDED.users,
    cities = EXCLUDED.cities,
    states = EXCLUDED.states,
    newest_accepted_at = GREATEST(t.newest_accepted_at, EXCLUDED.newest_accepted_at)
"""  # noqa: S608 (no input in it)
