"""What a message must look like before it is accepted.

Everything PostgreSQL cannot store (NUL bytes, lone surrogates from JSON escapes, text that is
not UTF-8) is refused here, at the edge, so a bad message never reaches a worker.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

MESSAGE_FIELDS = ("username", "city", "state", "message")
_SHORT_FIELDS = ("username", "city", "state")


@dataclass(frozen=True, slots=True)
class MessageInput:
    username: str
    city: str
    state: str
    message: str


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


def message_validate(data: Mapping[str, Any]) -> tuple[MessageInput | None, dict[str, list[str]]]:
    """Return (clean input, {}) or (None, {field: [reasons]}) naming every bad field.

    Fields other than the four are ignored, so clients may send extra metadata.
    """
    if not isinstance(data, Mapping):
        return None, {"__all__": ["Each message must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for name in MESSAGE_FIELDS:
        max_chars = settings.MESSY_MESSAGE_MAX_CHARS if name == "message" else settings.MESSY_FIELD_MAX_CHARS
        value = data.get(name)
        error = _field_error(name, value, max_chars)
        if error:
            errors[name] = [error]
        else:
            clean[name] = str(value).strip() if name in _SHORT_FIELDS else value
    if errors:
        return None, errors
    return MessageInput(**clean), {}
