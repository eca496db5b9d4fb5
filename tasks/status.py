"""The components of GET /status (project.health) that need the apps' data, registered from
TasksConfig.ready().

They are registered from here because tasks is the one app that sees every other one
(project <- stats <- messages <- tasks), and project itself imports no app. The staging figures
are read only through messages' own staging module (never written), and belong in a
messages selector registered from MessagesConfig.ready() once that app offers one.
"""

import time
from typing import Any

import redis
from django.db.models import Count

from messages import staging
from project.health import status_components
from project.redis import redis_client
from tasks.models import Job


def staging_status() -> dict[str, Any]:
    """The backlog and how far behind the drains are: messages staged and not yet stored, the
    age of the oldest (its stream entry id is its accept time in milliseconds), the dead
    letters parked, and the accept-to-store delay of the latest drain batch."""
    client = redis_client()
    try:
        first = client.xinfo_stream(staging.stream_key()).get("first-entry")
    except redis.ResponseError:  # no stream yet: nothing was ever staged
        first = None
    oldest_ms = int(first[0].split(b"-")[0]) if first else None
    return {
        "backlog": staging.backlog(),
        "oldest_age_seconds": None if oldest_ms is None else max(0.0, round(time.time() - oldest_ms / 1000, 3)),
        "dead_letters": int(client.xlen(staging.dead_letter_key())),
        "drain_lag_seconds": staging.metrics_snapshot().get("drain_lag_ms", 0) / 1000,
    }


def jobs_status() -> dict[str, Any]:
    """Jobs waiting for and held by workers (imports, erasures)."""
    counts = dict(
        Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {"queued": counts.get(Job.Status.QUEUED, 0), "running": counts.get(Job.Status.RUNNING, 0)}


def status_components_register() -> None:
    status_components.register("staging", staging_status)
    status_components.register("jobs", jobs_status)
