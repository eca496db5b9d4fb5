"""Storing staged messages in PostgreSQL, with their rollups, idempotently."""

import io
import logging
from collections.abc import Iterable, Sequence

from django.db import IntegrityError, connection, transaction

from messages.staged import StagedPayload
from stats.services.rollups import (
    ROLLUPS_ADDED_TABLE,
    rollups_add,
    rollups_added_table_create,
)

logger = logging.getLogger(__name__)


_Q, _QQ = '"', '""'


def _copy_rows(payloads: Iterable[StagedPayload]) -> io.StringIO:
    """The payloads as COPY csv: text fields quoted (quotes doubled), so any text goes through
    as it is and a NUL byte or a bad id is refused by PostgreSQL, not by this; sent_at empty
    and unquoted when absent (NULL). One f-string a row rather than csv.writer: see
    docs/staging.md ("Persist")."""
    return io.StringIO(
        "".join(
            [
                f'"{p["id"].replace(_Q, _QQ)}","{p["username"].replace(_Q, _QQ)}","{p["city"].replace(_Q, _QQ)}",'
                f'"{p["state"].replace(_Q, _QQ)}","{p["message"].replace(_Q, _QQ)}",{int(p["accepted_at"])},'
                f"{_sent_ms(p)}\n"
                for p in payloads
            ]
        )
    )


def _sent_ms(payload: StagedPayload) -> str:
    sent_at = payload.get("sent_at")
    return "" if sent_at is None else str(int(sent_at))


# Dropped at commit, not kept for the session: behind a pooler in transaction mode the next
# transaction may run on another server connection, and a table kept there would meet another
# client's (or an older release's) transactions.
_CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS messy_incoming (
    id uuid, username text, city text, state text, message text, accepted_ms bigint, sent_ms bigint
) ON COMMIT DROP
"""

_COPY_INCOMING = (
    "COPY messy_incoming (id, username, city, state, message, accepted_ms, sent_ms) FROM STDIN WITH (FORMAT csv)"
)

# float8 division: exact to the microsecond for any millisecond time, and cheaper than numeric.
_MESSAGE_ROWS = """
INSERT INTO message (id, username, city, state, message, accepted_at, stored_at, sent_at)
SELECT id, username, city, state, message, to_timestamp(accepted_ms / 1000.0::float8), now(),
    to_timestamp(sent_ms / 1000.0::float8)
FROM messy_incoming
ORDER BY id
"""

# Every message of a batch is new, except after a crash between commit and acknowledgement, a
# reclaimed entry its first drain stores at the same time, or the same client id twice in one
# batch: a plain INSERT first, then every row of messy_incoming is new and counts. It skips the
# speculative insertion of ON CONFLICT and the RETURNING (docs/staging.md, "Persist").
_INSERT_ALL = _MESSAGE_ROWS

# After a duplicate id: only the rows really inserted (not already there) feed the rollups,
# which is what makes a second delivery of the same batch change nothing.
_INSERT_NEW = f"""
WITH inserted AS (
    {_MESSAGE_ROWS}
    ON CONFLICT (id) DO NOTHING
    RETURNING username, city, state, accepted_at
)
INSERT INTO {ROLLUPS_ADDED_TABLE} SELECT * FROM inserted
"""  # noqa: S608 (a constant, not input)

# The rollups' source when every row of messy_incoming was inserted.
_INCOMING_ADDED = (
    "(SELECT username, city, state, to_timestamp(accepted_ms / 1000.0::float8) AS accepted_at FROM messy_incoming)"
    " AS incoming"
)


def _duplicate_id(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    return (
        getattr(exc.__cause__, "pgcode", None) == "23505" and getattr(diag, "constraint_name", None) == "message_pkey"
    )


def messages_persist(payloads: Sequence[StagedPayload], *, defer_rollups: bool = False) -> int:
    """Store messages and their rollups in one transaction; return how many were new.

    Idempotent on the message id: running it twice with the same payloads stores each
    message once and counts it once. With defer_rollups the counts go to a pending row of their
    own, folded later, so drains never wait on each other's rollup rows (docs/scaling.md).
    Raises DatabaseError; the caller decides on retries.
    Inserts in id order, so concurrent drains holding the same ids never wait in a cycle
    (docs/staging.md, "Persist").
    """
    if not payloads:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CREATE_INCOMING)
        # COPY needs psycopg2's own cursor; wrap it so its errors become Django's (DataError...).
        with connection.wrap_database_errors:
            cursor.cursor.copy_expert(_COPY_INCOMING, _copy_rows(payloads), size=65536)
        try:
            with transaction.atomic():
                cursor.execute(_INSERT_ALL)
                inserted, added = cursor.rowcount, _INCOMING_ADDED
        except IntegrityError as exc:
            if not _duplicate_id(exc):
                raise
            rollups_added_table_create(cursor)
            cursor.execute(_INSERT_NEW)
            inserted, added = cursor.rowcount, ROLLUPS_ADDED_TABLE
        if inserted:
            rollups_add(cursor, added, defer=defer_rollups)
    return inserted
