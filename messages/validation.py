"""What a message must look like before it is accepted.

Everything PostgreSQL cannot store (NUL bytes, lone surrogates from JSON escapes, text that is
not UTF-8) is refused here, at the edge, so a bad message never reaches a worker.
"""

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

from project.conf import cached_settings

MESSAGE_FIELDS = ("username", "city", "state", "message")
_SHORT_FIELDS = ("username", "city", "state")


@dataclass(frozen=True, slots=True)
class MessageInput:
    username: str
    city: str
    state: str
    message: str
    # The client's own id for the message ("id"), deduplicated per API key (messages.ids.client_message_id).
    client_id: uuid.UUID | None = None
    # When the client sent it ("sent_at"), Unix milliseconds.
    sent_at: int | None = None


def _field_error(name: str, value: Any, max_chars: int) -> str | None:
    if value is None or value == "":
        return "This field is required."
    if not isinstance(value, str):
        return "Must be a string."
    if "\x00" in value:
        return "Must not contain NUL bytes."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode text (no lone surrogates)."
    if not value.strip():
        return "Must not be blank."
    if len(value) > max_chars:
        return f"Must be at most {max_chars} characters."
    if name in _SHORT_FIELDS and not value.isprintable():
        return "Must not contain control characters."
    return None


def _client_id(value: Any) -> tuple[uuid.UUID | None, str | None]:
    if value is None or value == "":
        return None, None
    if isinstance(value, str) and len(value) <= 45:
        try:
            return uuid.UUID(value), None
        except ValueError:
            pass
    return None, "Must be a UUID."


def _sent_at(value: Any, history: bool) -> tuple[int | None, str | None]:
    """Unix ms from epoch milliseconds or ISO 8601 with a zone, within the allowed skew: at most
    MESSY_SENT_AT_MAX_FUTURE_SECONDS ahead of this host's clock, and (unless `history`: an
    import) at most MESSY_SENT_AT_MAX_AGE_SECONDS old."""
    if value is None or value == "":
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        sent_ms = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        sent_ms = int(value)  # a form or query string carries numbers as text
    elif isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None, "Must be ISO 8601 with a time zone, or Unix milliseconds."
        if moment.tzinfo is None:
            return None, "Must carry a time zone (Z or +hh:mm)."
        sent_ms = int(moment.timestamp() * 1000)
    else:
        return None, "Must be ISO 8601 with a time zone, or Unix milliseconds."
    now_ms = time.time_ns() // 1_000_000
    if sent_ms > now_ms + settings.MESSY_SENT_AT_MAX_FUTURE_SECONDS * 1000:
        return None, f"Must not be more than {settings.MESSY_SENT_AT_MAX_FUTURE_SECONDS} seconds in the future."
    if sent_ms < 0 or (not history and sent_ms < now_ms - settings.MESSY_SENT_AT_MAX_AGE_SECONDS * 1000):
        limit = "after 1970" if history else f"at most {settings.MESSY_SENT_AT_MAX_AGE_SECONDS} seconds old"
        return None, f"Must be {limit}."
    return sent_ms, None


def message_validate(
    data: Mapping[str, Any], *, history: bool = False
) -> tuple[MessageInput | None, dict[str, list[str]]]:
    """Return (clean input, {}) or (None, {field: [reasons]}) naming every bad field.

    Two optional fields: "id" (a UUID) and "sent_at" (see _sent_at). With `history` (an
    import: records of the past, with ids of their own making) sent_at has no age bound and
    "id" is ignored. Other fields are ignored, so clients may send extra metadata.
    """
    if type(data) is not dict and not isinstance(data, Mapping):  # a dict, nearly always: no ABC check
        return None, {"__all__": ["Each message must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    message_max, field_max = cached_settings.MESSY_MESSAGE_MAX_CHARS, cached_settings.MESSY_FIELD_MAX_CHARS
    for name in MESSAGE_FIELDS:
        max_chars = message_max if name == "message" else field_max
        value = data.get(name)
        error = _field_error(name, value, max_chars)
        if error:
            errors[name] = [error]
        else:
            clean[name] = str(value).strip() if name in _SHORT_FIELDS else value
    client_id, error = _client_id(None if history else data.get("id"))
    if error:
        errors["id"] = [error]
    sent_at, error = _sent_at(data.get("sent_at"), history)
    if error:
        errors["sent_at"] = [error]
    if errors:
        return None, errors
    return MessageInput(**clean, client_id=client_id, sent_at=sent_at), {}
