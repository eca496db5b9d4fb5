"""Functions that read jobs."""

import uuid
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from project.http import timestamp
from tasks.kinds import job_kinds
from tasks.models import ApiToken, ErasureTally, Job


def _visible(owner: ApiToken | None) -> QuerySet[Job]:
    """Every job, or only those `owner` created (tasks.auth.jobs_owner)."""
    return Job.objects.all() if owner is None else Job.objects.filter(created_by_token=owner)


def job_get(job_id: uuid.UUID, owner: ApiToken | None = None) -> Job | None:
    return _visible(owner).filter(pk=job_id).first()


def jobs_list(kind: str = "", status: str = "", limit: int = 100, owner: ApiToken | None = None) -> QuerySet[Job]:
    jobs = _visible(owner).order_by("-created_at")
    if kind:
        jobs = jobs.filter(kind=kind)
    if status:
        jobs = jobs.filter(status=status)
    return jobs[:limit]


def erasure_count() -> int:
    tally = ErasureTally.objects.filter(pk=1).first()
    return tally.erasures if tally else 0


def job_json(job: Job, page_token: str = "", memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the API says about a job, with its kind's own fields (JobKind.json_extra; `memo`
    is shared by the jobs of one listing). Never the erasure subject or the checkpoint."""
    urls = {
        "self": reverse("job-detail", args=[job.pk]),
        "cancel": reverse("job-cancel", args=[job.pk]),
        "page": reverse("job-page", args=[job.pk]) + (f"?t={page_token}" if page_token else ""),
    }
    if job.result_key:
        urls["report"] = reverse("job-report", args=[job.pk])
    body: dict[str, Any] = {
        "id": str(job.pk),
        "kind": job.kind,
        "status": job.status,
        "progress": {
            "done": job.progress_done,
            "total": job.progress_total,
            "unit": job.progress_unit,
            "message": job.progress_message,
        },
        "cancel_requested": job.cancel_requested,
        "error": job.error or None,
        "result": job.result,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "urls": urls,
    }
    body.update(job_kinds.get(job.kind).json_extra(job, {} if memo is None else memo))
    return body
