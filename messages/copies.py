"""The memcached copies of staged messages: a marker per message id, so a "pending" status read
is one memcached get. A copy holds no message content (only its presence is ever read), and
losing one costs nothing: the stream entry is the durable copy.

# Documented in docs/fast-path.md ("Deferred copies").
"""

from collections.abc import Iterable
from typing import Any

from django.core.cache import caches

from project import deferred
from project.conf import cached_settings

MARKER = b"1"

# A web process sends copies in groups (project.deferred), at most COPIES_MAX_AGE after the
# first of a group was added; docs/fast-path.md says why and what it saves.
COPIES_GROUP = 16
COPIES_MAX_AGE = 0.02  # seconds


def copy_key(message_id: str) -> str:
    return f"staged:{message_id}"


def _copies_send(keyed: dict[str, bytes]) -> None:
    copies = caches["staged"]
    # The backend's own pymemcache client, noreply, keys made as copies_store makes them: its
    # set_many() would check each key's characters in Python, and these keys are ours.
    client: Any = copies._cache  # type: ignore[attr-defined]
    client.set_many(keyed, copies.get_backend_timeout(), noreply=True)


def copies_late_seconds() -> int:
    """How long after staging a web process may still send a message's copy: WEB_TIMEOUT (the
    longest a request runs before gunicorn replaces its worker, dropping what it held), plus a
    margin."""
    return int(cached_settings.WEB_TIMEOUT) + 5


_copies = deferred.SendBuffer(_copies_send, COPIES_GROUP, COPIES_MAX_AGE)


def copies_store(message_ids: Iterable[str]) -> None:
    """Mark these messages as staged; in the web server, with the next ones (COPIES_GROUP)."""
    make_key = caches["staged"].make_key
    _copies.add({make_key(copy_key(message_id)): MARKER for message_id in message_ids})


def copy_exists(message_id: str) -> bool:
    return bool(caches["staged"].get(copy_key(message_id)))


def copies_delete(message_ids: Iterable[str]) -> None:
    keys = [copy_key(message_id) for message_id in message_ids]
    if keys:
        caches["staged"].delete_many(keys)
