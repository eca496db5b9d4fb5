"""The staged payload: a message between accept and persist, as JSON in the staging stream.

Defined here, apart from the Redis code, so that whoever builds or reads one (the drain, the
import job) imports a type, not a store.
"""

import json
from typing import NotRequired, TypedDict

import orjson

from messages.validation import MessageInput


class StagedPayload(TypedDict):
    """A message between acceptance and storage: the JSON document in the stream and in
    memcached, and what messages_persist stores (imports build it too)."""

    id: str  # a UUIDv7 (messages.ids)
    username: str
    city: str
    state: str
    message: str
    accepted_at: int  # Unix milliseconds, when the web process (or the import) accepted it
    sent_at: NotRequired[int]  # Unix milliseconds, when the client says it sent it (optional)


_PAYLOAD_TEXT_FIELDS = ("id", "username", "city", "state", "message")


def payload_decode(raw: bytes) -> StagedPayload:
    """A staged entry's payload, checked; raises ValueError, KeyError or TypeError when it is
    not a StagedPayload. (The id's form is left to PostgreSQL's uuid type.)"""
    payload = orjson.loads(raw)
    for name in _PAYLOAD_TEXT_FIELDS:
        if not isinstance(payload[name], str):
            raise TypeError(name)
    payload["accepted_at"] = int(payload["accepted_at"])
    if "sent_at" in payload:
        payload["sent_at"] = int(payload["sent_at"])
    return payload


def username_and_id(raw: bytes | None) -> tuple[str, str]:
    # Leniently: a dead-lettered entry may be malformed and must still be found by its username.
    try:
        payload = json.loads(raw or b"")
        return str(payload["username"]), str(payload["id"])
    except (ValueError, KeyError, TypeError):
        return "", ""


def staged_payload(message_id: str, item: MessageInput, accepted_at: int) -> StagedPayload:
    payload: StagedPayload = {
        "id": message_id,
        "username": item.username,
        "city": item.city,
        "state": item.state,
        "message": item.message,
        "accepted_at": accepted_at,
    }
    if item.sent_at is not None:
        payload["sent_at"] = item.sent_at
    return payload
