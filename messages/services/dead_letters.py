"""Replaying or purging dead letters (manage.py deadletters)."""

import logging
from collections.abc import Iterable, Sequence

from messages import copies, staging
from messages.services.drain import drain_schedule
from messages.staged import payload_decode

logger = logging.getLogger(__name__)


# Entries no drain could store (malformed, or refused by PostgreSQL) wait in the dead-letter
# stream, untrimmed, until an operator replays or purges them (manage.py deadletters).


def _message_ids(letters: Sequence[staging.DeadLetter]) -> list[str]:
    ids = []
    for letter in letters:
        try:
            ids.append(payload_decode(letter.payload)["id"])
        except (ValueError, KeyError, TypeError):
            continue  # malformed: it has no status to show
    return ids


def _dead_letters_each(entry_ids: Sequence[str] | None) -> Iterable[list[staging.DeadLetter]]:
    if entry_ids is not None:
        yield staging.dead_letters_get(entry_ids)
        return
    after = "-"
    while page := staging.dead_letters_page(after):
        yield page
        after = page[-1].entry_id


def dead_letters_replay(entry_ids: Sequence[str] | None = None) -> int:
    """Put dead letters (all, or those of these entry ids) back on the staging stream once
    their cause is fixed, and schedule a drain; return how many. Their memcached copies are
    written again, so their status reads pending until stored. Safe to repeat: the insert is
    idempotent on the message id. One that still cannot be stored is dead-lettered again."""
    shard = staging.shards()[0]  # any shard drains them: the first, to name one
    moved = 0
    for page in _dead_letters_each(entry_ids):
        for letter in page:
            staging.dead_letter_restage(shard, letter)
        copies.copies_store(_message_ids(page))
        moved += len(page)
    if moved and staging.slot_acquire(shard, 0, "replay", if_full=True):
        drain_schedule(shard, 0)
    return moved


def dead_letters_purge(entry_ids: Sequence[str] | None = None) -> int:
    """Delete dead letters (all, or those of these entry ids) and their memcached copies;
    return how many. Their messages are then lost: an operator's decision."""
    purged = 0
    for page in _dead_letters_each(entry_ids):
        purged += staging.dead_letters_delete([letter.entry_id for letter in page])
        copies.copies_delete(_message_ids(page))
    return purged
