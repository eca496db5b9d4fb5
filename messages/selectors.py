"""Functions that read messages."""

import logging
import uuid
from typing import Any

from django.core.cache import caches
from django.db import DatabaseError

from messages.models import Message
from messages.services import payload_cache_key

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
        if caches["staged"].get(payload_cache_key(str(message_id))):
            return {"status": "pending", "id": str(message_id)}
        raise
    if stored:
        return {"status": "stored", "id": str(message_id), **stored}
    if caches["staged"].get(payload_cache_key(str(message_id))):
        return {"status": "pending", "id": str(message_id)}
    return None
