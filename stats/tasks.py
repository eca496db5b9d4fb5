"""Celery tasks of the stats app. Thin: each calls one service."""

import logging
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from celery.utils.time import get_exponential_backoff_interval

from project.errors import error_is_transient
from stats.services import publish

logger = logging.getLogger(__name__)

# 1, 2, 4, 8, 16, 30, 30 s: about a minute and a half of retries, by which time the next
# minute's publish is trying too; beyond that a retry adds nothing.
PUBLISH_MAX_RETRIES = 7
_BACKOFF_MAX_SECONDS = 30


# Killed before its lease on the minute lapses (stats.services.publish), so two publishes of one
# minute never overlap; a publish takes milliseconds, and S3 calls time out in seconds.
_PUBLISH_TIME_LIMIT = publish.PUBLISH_LEASE_SECONDS - 5


@shared_task(
    bind=True,
    name="stats.publish",
    max_retries=PUBLISH_MAX_RETRIES,
    soft_time_limit=_PUBLISH_TIME_LIMIT - 5,
    time_limit=_PUBLISH_TIME_LIMIT,
)
def stats_publish(self: Any, force: bool = False) -> dict[str, Any]:
    """Publish the stats blob. Safe to run twice or from two beats: the service publishes at
    most once per minute. Errors that can pass (project.errors) are retried with backoff; any
    other fails at once, loudly, and the next minute's publish tries again."""
    try:
        outcome = publish.stats_publish(force=force)
    except Exception as exc:
        # Cut off by its time limit: S3 slower than its timeouts, which passes like an outage.
        # A forced publish waiting for another publisher's lease passes too.
        passes = error_is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded | publish.PublishInProgress)
        if not passes or self.request.retries >= PUBLISH_MAX_RETRIES:
            logger.error("stats publish failed for good: %r", exc)
            raise
        countdown = get_exponential_backoff_interval(1, self.request.retries, _BACKOFF_MAX_SECONDS)
        logger.warning(
            "stats publish failed (%r); retry %d of %d in %d s",
            exc,
            self.request.retries + 1,
            PUBLISH_MAX_RETRIES,
            countdown,
        )
        raise self.retry(exc=exc, countdown=countdown) from exc
    return {"published": outcome.published, "generated_at": outcome.generated_at}


@worker_ready.connect
def publish_when_a_worker_starts(sender: Any = None, **kwargs: Any) -> None:
    """A worker that starts asks for a publish at once instead of waiting for the schedule
    (after a deploy, or a local S3 server that restarted empty). Not forced: if this minute's
    blob is already out, it is a no-op, so the blob is still published once per minute."""
    publish.stats_publish_request()
