"""Dead letters: staged entries no drain could store, kept until an operator acts."""

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from messages.staged import username_and_id
from messages.staging.refusals import best_effort_failed, metrics_results_check
from messages.staging.shards import MARKER_TTL, Shard, dead_letter_key, marker_key
from messages.staging.stream import CONSUMER_GROUP, StagedEntry, stream_id
from project.redis import redis_client


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    payload: bytes
    reason: str

    @property
    def dead_lettered_ms(self) -> int:
        return stream_id(self.entry_id)[0]


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(entry_id.decode(), fields.get(b"m", b""), fields.get(b"reason", b"").decode("utf-8", "replace"))


def dead_letters_page(after: str = "-", count: int = 1000) -> list[DeadLetter]:
    """Dead letters, oldest first, from after the entry id `after` ("-": from the start)."""
    start = after if after == "-" else "(" + after
    return [_dead_letter(i, f) for i, f in redis_client().xrange(dead_letter_key(), min=start, max="+", count=count)]


def dead_letters_get(entry_ids: Sequence[str]) -> list[DeadLetter]:
    client = redis_client()
    found: list[DeadLetter] = []
    for entry_id in entry_ids:
        found.extend(_dead_letter(i, f) for i, f in client.xrange(dead_letter_key(), min=entry_id, max=entry_id))
    return found


def dead_letters_summary() -> tuple[int, int | None]:
    """(how many dead letters, Unix ms of the oldest or None), in one round trip."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xlen(dead_letter_key())
    pipe.xrange(dead_letter_key(), min="-", max="+", count=1)
    count, oldest = pipe.execute()
    return int(count), (stream_id(oldest[0][0])[0] if oldest else None)


def dead_letter_restage(shard: Shard, letter: DeadLetter) -> None:
    """Put a dead letter back on the staging stream of `shard` (any shard drains it), then
    delete it from the dead letters. If the process dies in between it is in both; replaying
    it again stores it once (the insert is idempotent on the message id)."""
    client = redis_client()
    entry_id = client.xadd(shard.stream, {"m": letter.payload})
    message_id = username_and_id(letter.payload)[1]
    if message_id:  # its status marker, as the stage script writes one
        client.set(marker_key(shard, message_id), entry_id, ex=MARKER_TTL)
    client.xdel(dead_letter_key(), letter.entry_id)


def dead_letters_delete(entry_ids: Sequence[str]) -> int:
    return int(redis_client().xdel(dead_letter_key(), *entry_ids)) if entry_ids else 0


def dead_letter(shard: Shard, entry: StagedEntry, reason: str) -> bool:
    """Park an entry that can never be stored, so it does not block the ones behind it;
    return whether it was parked.

    When Redis is full it refuses the XADD to the dead-letter stream: the entry then stays
    pending (False), and the next drain run or a reclaim tries it again. Otherwise it is
    added to the dead letters, then deleted and acknowledged (as in batch_ack). Not a
    transaction, for the same reason: if the process dies between the two steps, the entry
    is in both streams and is dead-lettered a second time later; a replay of both stores it
    once (the insert is idempotent on the message id)."""
    client = redis_client()
    try:
        # No MAXLEN: an accepted message is never dropped silently (manage.py deadletters).
        client.xadd(dead_letter_key(), {"m": entry.payload, "reason": reason[:500]})
    except redis.exceptions.OutOfMemoryError:
        best_effort_failed("a dead letter (the entry stays pending)")
        return False
    pipe = client.pipeline(transaction=False)
    pipe.xdel(shard.stream, entry.entry_id)
    pipe.xack(shard.stream, CONSUMER_GROUP, entry.entry_id)
    pipe.hincrby(shard.metrics, "dead_lettered", 1)
    results = pipe.execute(raise_on_error=False)
    for result in results[:2]:
        if isinstance(result, Exception):
            raise result
    metrics_results_check(results[2:])
    return True
