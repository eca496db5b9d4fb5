"""Numbers for /metrics that need the jobs table or sit between apps (see project.metrics),
registered from TasksConfig.ready()."""

import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from messages import staging
from project.redis import redis_client
from tasks.models import Job

logger = logging.getLogger(__name__)


class JobsCollector:
    """Jobs by status (imports, erasures, retention): one GROUP BY over the jobs table, which
    pruning keeps to MESSY_JOB_RETENTION_DAYS of jobs. Left out when PostgreSQL does not answer."""

    def collect(self) -> Iterator[Any]:
        try:
            counts = dict(Job.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        except DatabaseError as exc:
            logger.warning("metrics: job counts unavailable (%s)", type(exc).__name__)
            return
        metric = GaugeMetricFamily("messy_jobs", "Background jobs by status.", labels=["status"])
        for status in Job.Status.values:
            metric.add_metric([status], counts.get(status, 0))
        yield metric


class StagingAgeCollector:
    """How long the oldest staged message has waited to be stored: its stream entry id is its
    accept time in milliseconds, so one XRANGE of one entry. 0 when nothing is staged. It reads
    messages' stream only through that app's staging module (never writes), like the staging
    component of /status (tasks.status); it moves to messages.metrics with its owner."""

    def collect(self) -> Iterator[Any]:
        try:
            first = redis_client().xrange(staging.stream_key(), min="-", max="+", count=1)
        except redis.RedisError as exc:
            logger.warning("metrics: oldest staged message unavailable (%s)", type(exc).__name__)
            return
        oldest_ms = int(first[0][0].split(b"-")[0]) if first else None
        yield GaugeMetricFamily(
            "messy_backlog_oldest_age_seconds",
            "Age of the oldest message staged and not yet stored (0: nothing staged).",
            value=0 if oldest_ms is None else max(0.0, round(time.time() - oldest_ms / 1000, 3)),
        )
