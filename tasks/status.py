"""The jobs component of GET /status (project.health), registered from TasksConfig.ready()
(messages registers the staging component the same way)."""

from typing import Any

from django.db.models import Count

from project.health import status_components
from tasks.models import Job


def jobs_status() -> dict[str, Any]:
    """Jobs waiting for and held by workers (imports, erasures, retention)."""
    counts = dict(
        Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {"queued": counts.get(Job.Status.QUEUED, 0), "running": counts.get(Job.Status.RUNNING, 0)}


def status_components_register() -> None:
    status_components.register("jobs", jobs_status)
