"""The Celery application, and publishing a task by name. Configuration lives in
project/settings.py under CELERY_*."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_ready

import project.workers  # noqa: F401 (connects the live-workers heartbeat to the worker signals)
from project.logs import log_bind, log_unbind
from project.redis import redis_durability_warn

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

logger = logging.getLogger(__name__)

app = Celery("messy")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A broker that does not answer within about half a second is down for now: the callers keep
# their work safe elsewhere (the stream, the job row, the schedule) and something retries later.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3}


def task_publish(name: str, *args: Any, countdown: float = 0, **kwargs: Any) -> bool:
    """Send the task registered under `name` (e.g. "messages.drain") to the queue that
    CELERY_TASK_ROUTES gives it, without importing the module that defines it. Arguments must
    be JSON values.

    Never raises: the broker being unreachable is logged and answered with False, because every
    caller has a safety net (a periodic sweep, job recovery, the beat schedule) and is usually
    answering a request. Retries the publish briefly first.
    """
    try:
        app.send_task(
            name, args=args, kwargs=kwargs, countdown=countdown or None, retry=True, retry_policy=_RETRY_POLICY
        )
    except Exception:
        logger.warning("could not publish task %s; it will be published again later", name, exc_info=True)
        return False
    return True


@worker_ready.connect
def _staging_durability_check(**_: Any) -> None:
    """Say loudly, once per worker at start, when the staging Redis would lose or evict staged messages."""
    redis_durability_warn()


@setup_logging.connect
def _logging_from_django_settings(**_: Any) -> None:
    """Workers and beat log through settings.LOGGING (JSON lines, the ids of project.logs), like
    the web processes. A receiver of this signal stops Celery from configuring logging itself."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# The log context of the task running in this thread, by task id, so postrun unbinds it.
_task_log_tokens: dict[str, Any] = {}


@task_prerun.connect
def _task_log_context_bind(task_id: str = "", task: Any = None, **_: Any) -> None:
    _task_log_tokens[task_id] = log_bind(task_id=task_id, task_name=getattr(task, "name", ""))


@task_postrun.connect
def _task_log_context_unbind(task_id: str = "", **_: Any) -> None:
    token = _task_log_tokens.pop(task_id, None)
    if token is not None:
        log_unbind(token)
