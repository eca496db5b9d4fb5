"""The memcached copies of staged messages, which answer "pending" status reads cheaply.

# Documented in docs/fast-path.md ("Deferred copies").
"""

from collections.abc import Iterable, Sequence
from typing import Any

from django.core.cache import caches

from messages.staged import StagedPayload
from project import deferred
from project.conf import cached_settings

# A copy of each staged payload answers "pending" status reads cheaply. Written without waiting
# for a reply (the "staged" cache is noreply): losing one costs nothing, the stream entry is the
# durable copy.


def copy_key(message_id: str) -> str:
    return f"staged:{message_id}"


# A web process sends its memcached copies in groups (project.deferred): one set_many of a
# group costs memcached and the web process about what one set of a single copy does, and at a
# write's cost that decides whether a write is cheaper than a Django view that does nothing
# (README "Benchmarks"). A copy is sent when the group is full, or once it has waited
# COPIES_MAX_AGE: before the next request, or while the web process waits for one. So at most
# about a request's duration after staging (copies_late_seconds() bounds it). Until then a status read
# finds the message in the stream, as it does after an eviction.
COPIES_GROUP = 16
COPIES_MAX_AGE = 0.02  # seconds


def _copies_send(keyed: dict[str, bytes]) -> None:
    copies = caches["staged"]
    # Straight to the cache backend's own pymemcache client (what its set_many() calls), with
    # keys made as it makes them (copies_store): its set_many() would first check each key for
    # characters memcached refuses, one character at a time in Python, and these keys are ours
    # (a prefix and a UUID). Noreply: nothing waits for memcached.
    client: Any = copies._cache  # type: ignore[attr-defined]
    client.set_many(keyed, copies.get_backend_timeout(), noreply=True)


def copies_late_seconds() -> int:
    """How long after staging a web process may still send a message's copy: WEB_TIMEOUT (the
    longest a request runs before gunicorn replaces its worker, dropping what it held), plus a
    margin."""
    return int(cached_settings.WEB_TIMEOUT) + 5


_copies = deferred.SendBuffer(_copies_send, COPIES_GROUP, COPIES_MAX_AGE)


def copies_store(payloads: Sequence[StagedPayload], documents: Sequence[bytes]) -> None:
    """Store the copies of staged payloads (documents: the same payloads, JSON-encoded); in the
    web server, with the next ones (see COPIES_GROUP)."""
    make_key = caches["staged"].make_key
    _copies.add({make_key(copy_key(p["id"])): document for p, document in zip(payloads, documents, strict=True)})


def copy_exists(message_id: str) -> bool:
    return bool(caches["staged"].get(copy_key(message_id)))


def copies_delete(message_ids: Iterable[str]) -> None:
    keys = [copy_key(message_id) for message_id in message_ids]
    if keys:
        caches["staged"].delete_many(keys)
