"""Functions that change jobs: create, claim, checkpoint, finish, cancel, recover, prune; and
API tokens.

Every status change is one conditional UPDATE that names the state it starts from (and, for a
running job, the worker that holds it), so it touches exactly one row or none. That is what
makes a job safe against duplicate Celery messages, redelivery after a crash and two workers
racing: only one claim can win, and a worker that lost its claim can change nothing.

    queued --claim--> running --succeed/fail--> succeeded / failed
    queued --cancel--> cancelled      running --cancel requested, next checkpoint--> cancelled
    running --hand over (time is up)--> queued      running, heartbeat stale --claim--> running
"""

import functools
import hashlib
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from botocore.exceptions import BotoCoreError
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, F, PositiveIntegerField, Q, When
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from project.storage import s3_client
from tasks.models import ApiToken, Job, RejectedRecord

logger = logging.getLogger(__name__)

# Errors that can pass (a service unreachable or slow). A run that meets one stops with the job
# left running; its heartbeat goes stale and recovery resumes it from the checkpoint.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError, BotoCoreError)

TOKEN_PREFIX = "messy_"  # noqa: S105 (a marker that tells tokens apart in logs and leaks scanners)


class JobStopped(Exception):
    """The run must stop: the job was cancelled, or another worker holds it now."""


class HandOver(Exception):
    """This run has had its time; a fresh task continues from the checkpoint."""


class JobFailed(Exception):
    """The job cannot complete; `error` is shown to its creator."""

    def __init__(self, error: str, result: dict[str, Any] | None = None, result_key: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.result = result
        self.result_key = result_key


@dataclass
class Outcome:
    result: dict[str, Any]
    result_key: str = ""


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
    from tasks.tasks import run_job

    def publish() -> None:
        try:
            run_job.apply_async(
                args=(str(job_id),),
                countdown=countdown,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2},
            )
        except Exception:
            logger.exception("could not publish job %s; recovery will publish it again", job_id)

    transaction.on_commit(publish)


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


@dataclass
class JobRun:
    """One worker's hold on a running job, handed to the kind's runner."""

    job: Job
    owner: str
    deadline: float
    on_progress: Callable[[Job], None] | None = field(default=None)

    def _held(self) -> Any:
        return Job.objects.filter(pk=self.job.pk, owner=self.owner, status=Job.Status.RUNNING, cancel_requested=False)

    def checkpoint(self, *, done: int, message: str, state: dict[str, Any], total: int | None = None) -> None:
        """Record progress and where to resume, inside the caller's transaction, so the work and
        its checkpoint commit together. Raises JobStopped (rolling the caller back) when the
        job was cancelled or another worker took it over."""
        changes: dict[str, Any] = {
            "progress_done": done,
            "progress_message": message,
            "checkpoint": state,
            "heartbeat_at": Now(),
        }
        if total is not None:
            changes["progress_total"] = total
        if self._held().update(**changes) != 1:
            raise JobStopped()
        self.job.progress_done, self.job.progress_message, self.job.checkpoint = done, message, state
        if total is not None:
            self.job.progress_total = total
        if self.on_progress:
            self.on_progress(self.job)

    def heartbeat(self) -> None:
        """Say this worker is alive during a long wait; raises JobStopped like checkpoint."""
        if self._held().update(heartbeat_at=Now()) != 1:
            raise JobStopped()

    def pause_point(self) -> None:
        """Call between committed batches: past the run's deadline, hand over to a fresh task
        so workers stay responsive to shutdown and a job never meets Celery's time limit."""
        if time.monotonic() > self.deadline:
            raise HandOver()


def _runner(kind: str) -> Callable[[JobRun], Outcome]:
    from tasks.erasing import erasure_run
    from tasks.importing import import_run

    return {Job.Kind.IMPORT: import_run, Job.Kind.ERASE: erasure_run}[Job.Kind(kind)]


def job_run(job_id: uuid.UUID | str, on_progress: Callable[[Job], None] | None = None) -> str:
    """Claim the job and run it until it finishes, hands over or stops; return what happened.

    Safe to call any number of times, concurrently too: a call that cannot claim the job does
    nothing. Errors that can pass (database, Redis or S3 unreachable) propagate with the job
    left running: its heartbeat goes stale and recovery resumes it from the checkpoint.
    """
    from tasks.erasing import erasure_wait_seconds

    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return "skipped"
    if job.kind == Job.Kind.ERASE and job.status == Job.Status.QUEUED and job.started_at is None:
        wait = erasure_wait_seconds()
        if wait:
            job_defer(job.pk, wait, "Waiting for the erasure rate limit.")
            return "deferred"
    owner = _owner_name()
    if not job_claim(job.pk, owner):
        return "skipped"
    job.refresh_from_db()
    run = JobRun(job, owner, time.monotonic() + settings.MESSY_JOB_RUN_SECONDS, on_progress)
    try:
        if job.cancel_requested:
            raise JobStopped()
        outcome = _runner(job.kind)(run)
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
        # An erasure's exception text could quote the username; its type says enough.
        detail = type(exc).__name__ if job.kind == Job.Kind.ERASE else f"{type(exc).__name__}: {exc}"
        logger.error("job %s (%s) failed: %s", job.pk, job.kind, detail, exc_info=job.kind != Job.Kind.ERASE)
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
    """The final transition of a running job held by `owner`. The erasure subject is wiped in
    the same UPDATE, and a successful erasure is counted in the same transaction."""
    held = Job.objects.filter(pk=job.pk, owner=owner, status=Job.Status.RUNNING)
    if cancelled:
        held = held.filter(cancel_requested=True)
    with transaction.atomic():
        if not _finish_update(held, status, error=error, result=result, result_key=result_key):
            return False
        if job.kind == Job.Kind.ERASE and status == Job.Status.SUCCEEDED:
            _erasure_tally_increment()
    return True


def _finish_update(rows: Any, status: str, **fields: Any) -> bool:
    found = list(rows.values_list("pk", "kind")[:1])
    changes = {"status": status, "finished_at": Now(), "subject": "", "owner": "", "heartbeat_at": None}
    if status != Job.Status.SUCCEEDED:
        changes["progress_message"] = ""
    if rows.update(**changes, **{k: v for k, v in fields.items() if v is not None}) != 1:
        return False
    for job_id, kind in found:
        if kind == Job.Kind.IMPORT:
            RejectedRecord.objects.filter(job_id=job_id).delete()
            transaction.on_commit(functools.partial(_upload_delete, job_id))
    return True


def _upload_delete(job_id: uuid.UUID | str) -> None:
    """An import's uploaded file holds people's messages: it goes as soon as the job is done."""
    try:
        s3_client().delete_object(Bucket=settings.S3_BUCKET, Key=job_s3_key(job_id, UPLOAD))
    except Exception:
        logger.warning("could not delete the upload of job %s; pruning will", job_id, exc_info=True)


def _erasure_tally_increment() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tasks_erasure_tally (id, erasures) VALUES (1, 1) "
            "ON CONFLICT (id) DO UPDATE SET erasures = tasks_erasure_tally.erasures + 1"
        )


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


# --- API tokens ------------------------------------------------------------------------------


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_create(name: str) -> tuple[ApiToken, str]:
    """A new token; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(name=name, prefix=raw[: len(TOKEN_PREFIX) + 4], key_hash=token_hash(raw))
    return token, raw


def api_token_revoke(name: str) -> bool:
    return ApiToken.objects.filter(name=name, is_active=True).update(is_active=False) == 1


def api_token_used(token: ApiToken) -> None:
    """Note when a token was last used, at most once a minute (a read path should not write)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
