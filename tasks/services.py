"""Functions that change jobs: create, claim, run, finish, cancel, recover, prune. What a kind
of job does is registered in tasks.kinds; nothing here branches on the kind. Every status
change is one conditional UPDATE naming the state it starts from, so it touches one row or none.

# Documented in docs/jobs.md ("The job row and its transitions").
"""

import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, PositiveIntegerField, Q, When
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from project.celery import task_publish
from project.errors import TRANSIENT_ERRORS
from project.logs import log_bound_args
from project.storage import s3_client
from tasks.kinds import HandOver, JobFailed, JobRun, JobStopped, job_kinds
from tasks.models import ApiToken, Job, RejectedRecord

logger = logging.getLogger(__name__)


def job_s3_key(job_id: uuid.UUID | str, name: str) -> str:
    """Every S3 object of a job sits under one prefix, so pruning a job finds them all."""
    return f"{settings.MESSY_JOB_S3_PREFIX}{job_id}/{name}"


UPLOAD = "upload"
REPORT = "errors.json"


# --- creating --------------------------------------------------------------------------------


def job_create(
    kind: str,
    *,
    params: dict[str, Any] | None = None,
    subject: str = "",
    progress_total: int | None = None,
    progress_unit: str = "",
    created_by: Any = None,
    token: ApiToken | None = None,
    job_id: uuid.UUID | None = None,
    enqueue: bool = True,
) -> Job:
    """Insert a queued job and publish its task once the row is committed."""
    with transaction.atomic():
        job = Job.objects.create(
            id=job_id or uuid.uuid4(),
            kind=kind,
            params=params or {},
            subject=subject,
            progress_total=progress_total,
            progress_unit=progress_unit,
            progress_message="Waiting for a worker.",
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
            created_by_token=token,
            heartbeat_at=timezone.now(),  # for a queued job: when its task was last published
        )
        if enqueue:
            job_enqueue(job.pk)
    return job


def job_enqueue(job_id: uuid.UUID | str, countdown: float = 0) -> None:
    """Publish the job's task after the current transaction commits. A publish that fails is
    only logged: the job is queued in the database, and recovery publishes it again."""
    transaction.on_commit(functools.partial(task_publish, "tasks.run_job", str(job_id), countdown=countdown))


# --- running ---------------------------------------------------------------------------------


def _owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _stale_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.MESSY_JOB_STALE_SECONDS)


def job_claim(job_id: uuid.UUID | str, owner: str) -> bool:
    """Take a queued job, or a running one whose worker went silent, for `owner`. At most one
    concurrent claim of the same job wins."""
    claimable = Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, heartbeat_at__lt=_stale_before())
    return (
        Job.objects.filter(claimable, pk=job_id).update(
            status=Job.Status.RUNNING,
            owner=owner,
            heartbeat_at=Now(),
            started_at=Coalesce("started_at", Now()),
            # Taking over from a dead worker counts against MESSY_JOB_MAX_ATTEMPTS; a hand-over does not.
            attempts=Case(
                When(status=Job.Status.RUNNING, then=F("attempts") + 1),
                default=F("attempts"),
                output_field=PositiveIntegerField(),
            ),
        )
        == 1
    )


@log_bound_args("job_id")
def job_run(job_id: uuid.UUID | str, on_progress: Callable[[Job], None] | None = None) -> str:
    """Claim the job and run it until it finishes, hands over or stops; return what happened.

    Safe to call any number of times, concurrently too: a call that cannot claim the job does
    nothing. Errors that can pass (database, Redis or S3 unreachable) propagate with the job
    left running: its heartbeat goes stale and recovery resumes it from the checkpoint.
    """
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return "skipped"
    kind = job_kinds.get(job.kind)
    if job.status == Job.Status.QUEUED and job.started_at is None:
        deferral = kind.before_start(job)
        if deferral is not None:
            job_defer(job.pk, deferral.seconds, deferral.message)
            return "deferred"
    owner = _owner_name()
    if not job_claim(job.pk, owner):
        return "skipped"
    job.refresh_from_db()
    run = JobRun(job, owner, time.monotonic() + settings.MESSY_JOB_RUN_SECONDS, on_progress)
    try:
        if job.cancel_requested:
            raise JobStopped()
        outcome = kind.run(run)
    except HandOver:
        return "handed_over" if job_release(job.pk, owner) else "skipped"
    except JobStopped:
        return "cancelled" if _finish(job, owner, Job.Status.CANCELLED, cancelled=True) else "skipped"
    except JobFailed as exc:
        _finish(job, owner, Job.Status.FAILED, error=exc.error, result=exc.result, result_key=exc.result_key)
        return "failed"
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        detail = type(exc).__name__ if kind.error_text_private else f"{type(exc).__name__}: {exc}"
        logger.error("job %s (%s) failed: %s", job.pk, job.kind, detail, exc_info=not kind.error_text_private)
        _finish(job, owner, Job.Status.FAILED, error=f"Unexpected error ({detail}).")
        return "failed"
    done = _finish(job, owner, Job.Status.SUCCEEDED, result=outcome.result, result_key=outcome.result_key)
    return "succeeded" if done else "skipped"


def job_release(job_id: uuid.UUID | str, owner: str) -> bool:
    """Hand a running job back to the queue, keeping its checkpoint, and publish it again."""
    with transaction.atomic():
        released = (
            Job.objects.filter(pk=job_id, owner=owner, status=Job.Status.RUNNING).update(
                status=Job.Status.QUEUED, owner="", heartbeat_at=Now()
            )
            == 1
        )
        if released:
            job_enqueue(job_id)
    return released


def job_defer(job_id: uuid.UUID | str, seconds: float, message: str) -> None:
    """Publish a queued job again for later (the erasure rate limit)."""
    with transaction.atomic():
        if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(progress_message=message, heartbeat_at=Now()):
            job_enqueue(job_id, countdown=seconds)


def _finish(
    job: Job,
    owner: str,
    status: str,
    *,
    error: str = "",
    result: dict[str, Any] | None = None,
    result_key: str = "",
    cancelled: bool = False,
) -> bool:
    """The final transition of a running job held by `owner`. The job's subject is wiped in the
    same UPDATE, and the kind's on_success hook runs in the same transaction."""
    held = Job.objects.filter(pk=job.pk, owner=owner, status=Job.Status.RUNNING)
    if cancelled:
        held = held.filter(cancel_requested=True)
    with transaction.atomic():
        if not _finish_update(held, status, error=error, result=result, result_key=result_key):
            return False
        if status == Job.Status.SUCCEEDED:
            job_kinds.get(job.kind).on_success(job)
    return True


def _finish_update(rows: Any, status: str, **fields: Any) -> bool:
    found = list(rows.values_list("pk", "kind")[:1])
    changes = {"status": status, "finished_at": Now(), "subject": "", "owner": "", "heartbeat_at": None}
    if status != Job.Status.SUCCEEDED:
        changes["progress_message"] = ""
    if rows.update(**changes, **{k: v for k, v in fields.items() if v is not None}) != 1:
        return False
    for job_id, kind in found:
        job_kinds.get(kind).on_finish(job_id)
    return True


def job_cancel(job: Job) -> bool:
    """Cancel a job: a queued one at once, a running one at its next checkpoint. Returns False
    when the job had already finished. Idempotent."""
    with transaction.atomic():
        queued = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED)
        if _finish_update(queued, Job.Status.CANCELLED, cancel_requested=True):
            return True
        return Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True) == 1


# --- housekeeping ----------------------------------------------------------------------------


def jobs_recover(limit: int = 100) -> int:
    """Publish again every job a worker should be running and is not: running jobs whose
    heartbeat went stale (the worker died) and queued jobs whose task was published long ago
    (it may have been lost). Jobs whose workers died MESSY_JOB_MAX_ATTEMPTS times fail.
    Returns how many jobs were published."""
    stale = _stale_before()
    dead = Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=stale)
    for job_id, heartbeat in dead.filter(attempts__gte=settings.MESSY_JOB_MAX_ATTEMPTS).values_list(
        "pk", "heartbeat_at"
    )[:limit]:
        # Conditional on the heartbeat seen, so a worker that just came back keeps its job.
        rows = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, heartbeat_at=heartbeat)
        with transaction.atomic():
            _finish_update(rows, Job.Status.FAILED, error="The job's worker stopped too many times; it was given up.")
    lost_before = timezone.now() - timedelta(seconds=10 * settings.MESSY_JOB_STALE_SECONDS)
    waiting = Job.objects.filter(
        Q(status=Job.Status.RUNNING, heartbeat_at__lt=stale) | Q(status=Job.Status.QUEUED, heartbeat_at__lt=lost_before)
    )
    job_ids = list(waiting.values_list("pk", flat=True)[:limit])
    with transaction.atomic():
        Job.objects.filter(pk__in=job_ids, status=Job.Status.QUEUED).update(heartbeat_at=Now())
        for job_id in job_ids:
            job_enqueue(job_id)
    if job_ids:
        logger.info("recovery published %d jobs again", len(job_ids))
    return len(job_ids)


def jobs_prune() -> int:
    """Delete jobs finished more than MESSY_JOB_RETENTION_DAYS ago, with their S3 objects, in
    chunks of MESSY_JOB_PRUNE_CHUNK (short transactions, bounded S3 calls). Returns the count."""
    cutoff = timezone.now() - timedelta(days=settings.MESSY_JOB_RETENTION_DAYS)
    chunk = settings.MESSY_JOB_PRUNE_CHUNK
    pruned = 0
    while True:
        job_ids = list(
            Job.objects.filter(finished_at__lt=cutoff).order_by("finished_at").values_list("pk", flat=True)[:chunk]
        )
        if not job_ids:
            return pruned
        # S3 first: if the database delete then fails, the next run deletes the (gone) objects again.
        objects = [{"Key": job_s3_key(job_id, name)} for job_id in job_ids for name in (UPLOAD, REPORT)]
        s3_client().delete_objects(Bucket=settings.S3_BUCKET, Delete={"Objects": objects, "Quiet": True})
        with transaction.atomic():
            RejectedRecord.objects.filter(job_id__in=job_ids).delete()
            Job.objects.filter(pk__in=job_ids).delete()
        pruned += len(job_ids)
        if len(job_ids) < chunk:
            return pruned
