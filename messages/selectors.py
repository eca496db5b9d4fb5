"""Functions that read messages."""

import uuid
from typing import Any

from django.core.cache import caches

from messages.models import Message
from messages.services import payload_cache_key


def message_status(message_id: uuid.UUID) -> dict[str, Any] | None:
    """"stored" with its fields, "pending" while staged, or None when unknown.

    The database is asked first: a stored message may still have a memcached copy.
    """
    stored = Message.objects.filter(pk=message_id).values(
        "id", "username", "city", "state", "message", "accepted_at", "stored_at"
    ).first()
    if stored:
        stored["id"] = str(stored["id"])
        return {"status": "stored", **stored}
    staged = caches["staged"].get(payload_cache_key(str(message_id)))
    if staged:
        return {"status": "pending", "id": str(message_id)}
    return None
