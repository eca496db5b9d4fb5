"""Job kinds: what each kind of job does, registered by the module that implements it.

A kind is one module (tasks/importing.py, erasing.py, retention.py) with a JobKind subclass and
one registration line; the runner asks the registry instead of branching on the kind. The kinds'
modules are imported by TasksConfig.ready().

# Documented in docs/jobs.md ("Kinds").
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Now

from tasks.models import ApiToken, Job


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


@dataclass(frozen=True, slots=True)
class Deferral:
    """Start the job later: publish it again in `seconds`, showing `message` meanwhile."""

    seconds: float
    message: str


@dataclass
class JobRun:
    """One worker's hold on a running job, handed to the kind's runner."""

    job: Job
    owner: str
    deadline: float
    on_progress: Callable[[Job], None] | None = field(default=None)

    def _held(self) -> QuerySet[Job]:
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


class JobKind:
    """What one kind of job does. Override run(); the hooks do nothing by default."""

    # The API scope that creating, and cancelling, a job of this kind takes.
    scope: str = ApiToken.Scope.ADMIN
    # Whether an unexpected error's text stays out of the job row and the logs (only its type
    # is shown), because it could quote what the job must not keep (an erased username).
    error_text_private = False

    def json_extra(self, job: Job, memo: dict[str, Any]) -> dict[str, Any]:
        """Fields of this kind in the API's JSON of a job; `memo` is shared by one listing."""
        return {}

    def run(self, run: JobRun) -> Outcome:
        """Do the work, checkpointing as it goes; raise JobFailed to fail with a message, and
        let errors that can pass (project.errors) propagate: recovery resumes the job."""
        raise NotImplementedError

    def before_start(self, job: Job) -> Deferral | None:
        """Called before a queued job's first claim; a Deferral postpones the start."""
        return None

    def on_success(self, job: Job) -> None:
        """Called in the transaction that marks the job succeeded."""

    def on_finish(self, job_id: Any) -> None:
        """Called in the transaction that finishes the job, whatever its final status (also
        for a queued job cancelled, or one given up by recovery)."""


class JobKinds:
    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: str, implementation: JobKind) -> None:
        self._kinds[str(kind)] = implementation

    def get(self, kind: str) -> JobKind:
        return self._kinds[str(kind)]


job_kinds = JobKinds()
