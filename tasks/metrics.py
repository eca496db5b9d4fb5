"""Numbers for /metrics from the jobs table (see project.metrics), registered from
TasksConfig.ready()."""

import logging
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

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
