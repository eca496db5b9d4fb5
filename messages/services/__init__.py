"""Functions that change the state of messages, one module per unit of work: accept, persist,
drain, erase (and retention), dead_letters.

# Documented in docs/staging.md
"""

from messages.errors import (
    BacklogFull,
    BacklogShareFull,
    IdempotencyBudgetSpent,
    IdempotencyConflict,
    MessageIdConflict,
    QuotaExceeded,
    StagingFull,
    StagingUnavailable,
)
from messages.services.accept import Accepted, WriteRequest, messages_accept, messages_rejected_count
from messages.services.dead_letters import dead_letters_purge, dead_letters_replay
from messages.services.drain import (
    DrainReport,
    drain_schedule,
    drain_workers_forget,
    drain_workers_heartbeat,
    messages_drain,
    messages_sweep,
)
from messages.services.erase import (
    copies_delete,
    copies_delete_later,
    messages_delete_older_than,
    messages_erase_from_disk,
    messages_erase_staged,
    messages_erase_stored,
    messages_erase_wait,
)
from messages.services.persist import messages_persist

__all__ = [
    "Accepted",
    "BacklogFull",
    "BacklogShareFull",
    "DrainReport",
    "IdempotencyBudgetSpent",
    "IdempotencyConflict",
    "MessageIdConflict",
    "QuotaExceeded",
    "StagingFull",
    "StagingUnavailable",
    "WriteRequest",
    "copies_delete",
    "copies_delete_later",
    "dead_letters_purge",
    "dead_letters_replay",
    "drain_schedule",
    "drain_workers_forget",
    "drain_workers_heartbeat",
    "messages_accept",
    "messages_delete_older_than",
    "messages_drain",
    "messages_erase_from_disk",
    "messages_erase_staged",
    "messages_erase_stored",
    "messages_erase_wait",
    "messages_persist",
    "messages_rejected_count",
    "messages_sweep",
]
