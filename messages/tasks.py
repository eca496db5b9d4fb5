"""Celery tasks of the write path. Thin: each calls one service, and is named after it."""

import logging
import os
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings

from messages import services, staging
from project.errors import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)


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
def messages_drain(slot: int, shard: int) -> dict[str, int]:
    report = services.messages_drain(staging.shards()[shard], slot)
    return {"batches": report.batches, "entries": report.entries, "stored": report.stored}


@shared_task(name="messages.sweep", autoretry_for=TRANSIENT_ERRORS, max_retries=0)
def messages_sweep() -> bool:
    return services.messages_sweep()


@shared_task(name="messages.copies_delete", autoretry_for=TRANSIENT_ERRORS, max_retries=3)
def messages_copies_delete(message_ids: list[str]) -> int:
    services.copies_delete(message_ids)
    return len(message_ids)


# --- drain capacity follows the live ingest workers -------------------------------------------
# A worker that consumes the drains' queue says, from its main process, every few seconds, how
# many pool processes it has (staging.drain_capacity sums them). A thread, not a beat task:
# a busy pool must not delay it, and a worker killed with -9 simply stops saying it.

_heartbeat_stop = threading.Event()
_heartbeat_name = ""


def _drain_queue() -> str:
    return str(settings.CELERY_TASK_ROUTES["messages.*"]["queue"])


@worker_ready.connect
def _drain_workers_join(sender: Any = None, **_: Any) -> None:
    global _heartbeat_name
    queues = {queue.name for queue in getattr(getattr(sender, "task_consumer", None), "queues", ())}
    if _drain_queue() not in queues:
        return
    processes = int(getattr(sender.controller, "concurrency", 1) or 1)
    _heartbeat_name = f"{sender.hostname}:{os.getpid()}"
    _heartbeat_stop.clear()
    threading.Thread(
        target=services.drain_workers_heartbeat,
        args=(_heartbeat_name, processes, _heartbeat_stop),
        name="drain-heartbeat",
        daemon=True,
    ).start()


@worker_shutting_down.connect  # as soon as it stops taking tasks (a soft shutdown may last)
@worker_shutdown.connect
def _drain_workers_leave(**_: Any) -> None:
    if not _heartbeat_name or _heartbeat_stop.is_set():
        return
    _heartbeat_stop.set()
    try:
        services.drain_workers_forget(_heartbeat_name)
    except Exception:
        logger.warning("could not withdraw this worker's drain capacity", exc_info=True)
