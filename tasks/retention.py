"""Retention: delete the stored messages accepted more than MESSY_MESSAGE_RETENTION_DAYS ago,
keeping the rollups exact, as a tracked job created hourly by the beat (off while the setting is
0, the default). Chunks of MESSY_RETENTION_CHUNK, each checkpointed as it commits.

# Documented in docs/jobs.md ("Retention").
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messages.services import messages_delete_older_than
from stats.selectors import messages_accepted_before
from stats.services.publish import stats_republish
from tasks.kinds import JobKind, JobRun, Outcome, job_kinds
from tasks.models import ApiToken, Job
from tasks.services import job_create

# Any constant that no other code uses for an advisory lock ("messy-retention", as digits).
RETENTION_LOCK = 0x6D657373795F7265


def retention_cutoff(now: datetime, days: int) -> datetime:
    """The start of the minute `days` days before `now`: messages accepted before it go."""
    return (now - timedelta(days=days)).replace(second=0, microsecond=0)


def retention_job_create(now: datetime | None = None) -> Job | None:
    """Create the retention job, unless retention is off, one is already queued or running, or
    the rollups count no message before the cutoff; returns the new job or None.

    Idempotent: two beats (or a redelivered task) firing at once create one job, because the
    check and the insert run under a transaction-scoped advisory lock.
    """
    days = settings.MESSY_MESSAGE_RETENTION_DAYS
    if days <= 0:
        return None
    cutoff = retention_cutoff(now or timezone.now(), days)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RETENTION_LOCK])
        unfinished = Job.objects.filter(kind=Job.Kind.RETAIN, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
        if unfinished.exists() or not messages_accepted_before(cutoff):
            return None
        return job_create(
            Job.Kind.RETAIN, params={"cutoff": cutoff.isoformat(), "days": days}, progress_unit="messages"
        )


def retention_run(run: JobRun) -> Outcome:
    cutoff = datetime.fromisoformat(run.job.params["cutoff"])
    state: dict[str, Any] = {"deleted": 0, **run.job.checkpoint}
    if "total" not in state:
        state["total"] = messages_accepted_before(cutoff)
        with transaction.atomic():
            run.checkpoint(done=0, total=state["total"], message="Deleting messages past retention.", state=state)
    chunk = settings.MESSY_RETENTION_CHUNK
    while True:
        with transaction.atomic():
            deleted = messages_delete_older_than(cutoff, chunk)
            state = {**state, "deleted": state["deleted"] + deleted}
            # Messages stored before the cutoff while the job runs can take it past its total.
            total = max(state["total"], state["deleted"])
            run.checkpoint(
                done=state["deleted"], total=total, message=f"{state['deleted']:,} messages deleted.", state=state
            )
        if deleted < chunk:
            break
        run.pause_point()
    if state["deleted"]:
        # So the published totals, top lists and timeline leave the deleted messages now rather
        # than at the next minute's publish (which also rebuilds a leaderboard marked stale).
        stats_republish()
    return Outcome({"messages_deleted": state["deleted"], "accepted_before": run.job.params["cutoff"]})


class RetentionKind(JobKind):
    # The operators' own jobs (the schedule creates them): only admin may cancel one.
    scope = ApiToken.Scope.ADMIN

    def run(self, run: JobRun) -> Outcome:
        return retention_run(run)


job_kinds.register(Job.Kind.RETAIN, RetentionKind())
