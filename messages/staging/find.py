"""Finding a staged message by its id, for status reads."""

from typing import Any

from django.conf import settings

from messages.staged import username_and_id
from messages.staging.shards import shards
from project.redis import redis_client

FIND_PAGE = 500


def entry_find(message_id: str, id_ms: int) -> bool:
    """Whether a shard's stream holds the message `message_id`, minted at Unix millisecond id_ms.

    Its entry was added at id_ms, or later when another host's clock was ahead (see the stage
    script), so the search walks forward from id_ms to id_ms + MESSY_CLOCK_SKEW_MS, a page at a
    time: usually one round trip, at worst the entries of that window."""
    return any(_entry_in(shard.stream, message_id, id_ms) for shard in shards())


def _entry_in(stream: str, message_id: str, id_ms: int) -> bool:
    client = redis_client()
    needle = message_id.encode()
    start, end = f"{id_ms}-0", f"{id_ms + settings.MESSY_CLOCK_SKEW_MS}-18446744073709551615"
    while True:
        entries: list[Any] = client.xrange(stream, min=start, max=end, count=FIND_PAGE)
        for _, fields in entries:
            document = fields.get(b"m") or b""
            # The id's text may also appear inside another message's text: parse to be sure.
            if needle in document and username_and_id(document)[1] == message_id:
                return True
        if len(entries) < FIND_PAGE:
            return False
        start = "(" + entries[-1][0].decode()
