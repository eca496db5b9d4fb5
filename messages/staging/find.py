"""Finding a staged message by its id, for status reads: through the marker naming its entry."""

from typing import Any

from messages.staged import username_and_id
from messages.staging.shards import each_shard, marker_key, shards
from project.redis import redis_client


def entry_find(message_id: str) -> bool:
    """Whether a shard's stream holds the message `message_id`: its marker (written by the stage
    script) names its entry, which must still be there and carry that id. Two round trips
    whatever the backlog: the markers of every shard in one pipeline, then the one entry."""
    markers = each_shard(lambda pipe, shard: pipe.get(marker_key(shard, message_id)))
    for shard, entry_id in zip(shards(), markers, strict=True):
        if entry_id is None:
            continue
        entries: list[Any] = redis_client().xrange(shard.stream, min=entry_id, max=entry_id, count=1)
        if entries and username_and_id(entries[0][1].get(b"m"))[1] == message_id:
            return True
    return False
