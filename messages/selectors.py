"""Functions that read messages."""

import logging
import uuid
from typing import Any

from django.db import DatabaseError

from messages import staging
from messages.models import Message
from project.http import timestamp

logger = logging.getLogger(__name__)


def message_status(message_id: uuid.UUID) -> dict[str, Any] | None:
    """The message as "stored" with its fields, "pending" while staged, or None if unknown.

    The database is asked first, since a stored message may still have a memcached copy.
    While the database is unreachable, a message with a memcached copy still reads as
    pending; otherwise the DatabaseError propagates (the view answers 503).
    """
    try:
        stored = (
            Message.objects.filter(pk=message_id)
            .values("username", "city", "state", "message", "accepted_at", "stored_at")
            .first()
        )
    except DatabaseError:
        logger.warning("database unreachable for a status read; trying the staged copy")
        if staging.copy_exists(str(message_id)):
            return {"status": "pending", "id": str(message_id)}
        raise
    if stored:
        return {
            "status": "stored",
            "id": str(message_id),
            **stored,
            "accepted_at": timestamp(stored["accepted_at"]),
            "stored_at": timestamp(stored["stored_at"]),
        }
    if staging.copy_exists(str(message_id)):
        return {"status": "pending", "id": str(message_id)}
    return None


def user_messages_count(username: str) -> int:
    """How many stored messages the user has (an index scan of message_username)."""
    return Message.objects.filter(username=username).count()
