"""Functions that read messages."""

import uuid
from typing import Any

from django.core.cache import caches

from messages.models import Message
from messages.services import payload_cache_key


def message_status(message_id: uuid.UUID) -> dict[str, Any] | None:
    """The message as "stored" with its fields, "pending" while staged, or None if unknown.

    The database is asked first: a stored message may still have a memcached copy.
    """
    stored = (
        Message.objects.filter(pk=message_id)
        .values("username", "city", "state", "message", "accepted_at", "stored_at")
        .first()
    )
    if stored:
        return {"status": "stored", "id": str(message_id), **stored}
    staged = caches["staged"].get(payload_cache_key(str(message_id)))
    if staged:
        return {"status": "pending", "id": str(message_id)}
    return None
