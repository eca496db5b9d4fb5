"""Celery tasks of the write path. Thin: each calls one service, and is named after it."""

from celery import shared_task

from messages import services
from project.errors import TRANSIENT_ERRORS


# Only errors that can pass are retried: PostgreSQL or Redis unreachable. The staged entries
# stay pending meanwhile, so retrying (or giving up and letting the sweep start a new drain)
# never loses a message.
@shared_task(
    name="messages.drain",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=20,
)
def messages_drain(slot: int) -> dict[str, int]:
    report = services.messages_drain(slot)
    return {"batches": report.batches, "entries": report.entries, "stored": report.stored}


@shared_task(name="messages.sweep", autoretry_for=TRANSIENT_ERRORS, max_retries=0)
def messages_sweep() -> bool:
    return services.messages_sweep()
