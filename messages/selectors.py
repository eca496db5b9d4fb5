"""Functions that read messages."""

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import redis
from django.db import DatabaseError

from messages import copies, staging
from messages.errors import StagingUnavailable
from messages.models import Message
from project.http import timestamp

logger = logging.getLogger(__name__)


def _staged(message_id: uuid.UUID) -> bool:
    """Whether the message is staged: its memcached copy, or else (evicted, memcached
    restarted, its TTL passed during a long PostgreSQL outage) its entry in the stream, found
    through the marker naming it."""
    text = str(message_id)
    try:
        return copies.copy_exists(text) or staging.entry_find(text)
    except redis.RedisError as exc:
        raise StagingUnavailable() from exc


def message_status(message_id: uuid.UUID) -> dict[str, Any] | None:
    """The message as "stored" with its fields, "pending" while staged, or None if unknown.

    The database is asked first, since a stored message may still have a memcached copy or a
    stream entry (acknowledged a moment after its commit). While the database is unreachable,
    a staged message still reads as pending; otherwise the DatabaseError propagates (the view
    answers 503). Raises StagingUnavailable when the stream must be read and cannot be.
    """
    try:
        stored = (
            Message.objects.filter(pk=message_id)
            .values("username", "city", "state", "message", "accepted_at", "stored_at", "sent_at")
            .first()
        )
    except DatabaseError:
        logger.warning("database unreachable for a status read; looking for the staged message")
        if _staged(message_id):
            return {"status": "pending", "id": str(message_id)}
        raise
    if stored:
        return {
            "status": "stored",
            "id": str(message_id),
            **stored,
            "accepted_at": timestamp(stored["accepted_at"]),
            "stored_at": timestamp(stored["stored_at"]),
            "sent_at": timestamp(stored["sent_at"]),
        }
    if _staged(message_id):
        return {"status": "pending", "id": str(message_id)}
    return None


def dead_letters_list(*, show: bool = False, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Dead letters, oldest first: entry id, message id, when dead-lettered and why (the first
    line of the reason: database errors go on with the row's content). The message's fields
    only with show=True: they are personal data."""
    now_ms = time.time() * 1000
    after = "-"
    listed = 0
    while page := staging.dead_letters_page(after):
        for letter in page:
            if limit is not None and listed >= limit:
                return
            try:
                payload: dict[str, Any] = orjson.loads(letter.payload)
            except orjson.JSONDecodeError:
                payload = {}
            row: dict[str, Any] = {
                "entry": letter.entry_id,
                "id": str(payload.get("id", "")) if isinstance(payload, dict) else "",
                "age_seconds": round(max(0.0, now_ms - letter.dead_lettered_ms) / 1000, 1),
                "reason": letter.reason if show else letter.reason.split("\n", 1)[0],
            }
            if show:
                row["payload"] = letter.payload.decode("utf-8", "replace")
            listed += 1
            yield row
        after = page[-1].entry_id


def user_messages_count(username: str) -> int:
    """How many stored messages the user has (an index scan of message_username)."""
    return Message.objects.filter(username=username).count()
