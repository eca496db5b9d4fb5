"""Celery tasks of the write path. Thin: each calls one service."""

from celery import shared_task
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from messages import services

# Only errors that can pass are retried: PostgreSQL or Redis unreachable. The staged entries
# stay pending meanwhile, so retrying (or giving up and letting the sweep start a new drain)
# never loses a message.
_TRANSIENT = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)


@shared_task(
    name="messages.drain",
    autoretry_for=_TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=20,
)
def drain_messages(slot: int) -> dict[str, int]:
    report = services.messages_drain(slot)
    return {"batches": report.batches, "entries": report.entries, "stored": report.stored}


@shared_task(name="messages.sweep", autoretry_for=_TRANSIENT, max_retries=0)
def sweep_staged() -> bool:
    return services.messages_sweep()
