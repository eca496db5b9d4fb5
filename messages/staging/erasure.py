"""Scanning the staging streams for one user's entries, for an erasure."""

from collections.abc import Callable
from typing import Any

import redis

from messages.staged import username_and_id
from messages.staging.shards import Shard
from messages.staging.stream import CONSUMER_GROUP, stream_id
from project.redis import redis_client

SCAN_COUNT = 1000


def stream_user_delete(stream: str, username: str, heartbeat: Callable[[], None]) -> list[tuple[bytes, str]]:
    """Delete every entry of `username` from `stream` (a shard's stream or dead_letter_key()),
    SCAN_COUNT entries at a time; return (entry id, message id) of each deleted. A backlog of a
    million entries takes seconds to scan: heartbeat() is called between chunks."""
    client = redis_client()
    deleted: list[tuple[bytes, str]] = []
    start = "-"
    while True:
        entries: list[Any] = client.xrange(stream, min=start, max="+", count=SCAN_COUNT)
        matching = []
        for entry_id, fields in entries:
            name, message_id = username_and_id(fields.get(b"m"))
            if name == username:
                matching.append((entry_id, message_id))
        if matching:
            client.xdel(stream, *[entry_id for entry_id, _ in matching])
            deleted.extend(matching)
        if len(entries) < SCAN_COUNT:
            return deleted
        start = "(" + entries[-1][0].decode()
        heartbeat()


def pending_among(shard: Shard, entry_ids: set[bytes]) -> set[bytes]:
    """Which of these entries of the shard a drain has read and not yet acknowledged (it
    acknowledges only after the transaction storing them committed)."""
    low, high = min(entry_ids, key=stream_id), max(entry_ids, key=stream_id)
    try:
        pending: list[dict[str, Any]] = redis_client().xpending_range(
            shard.stream, CONSUMER_GROUP, min=low, max=high, count=len(entry_ids) + 100_000
        )
    except redis.ResponseError:
        return set()  # no consumer group yet: nothing was ever read, nothing is in flight
    return entry_ids & {item["message_id"] for item in pending}
