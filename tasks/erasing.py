"""Erasure: remove every stored and staged message of one username, keeping rollups exact, and
leave no trace of who it was (only the count of erasures performed). The messages app does the
erasing; this job orders the steps, checkpoints each chunk and fences imports off (tasks.fence).

# Documented in docs/jobs.md ("Erasure").
"""

import time
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from messages.selectors import user_messages_count
from messages.services import (
    messages_erase_from_disk,
    messages_erase_staged,
    messages_erase_stored,
    messages_erase_wait,
)
from project.redis import key, redis_client
from stats.services.publish import stats_republish
from tasks.fence import erasure_fence_raise, fence_hand_over
from tasks.kinds import Deferral, JobFailed, JobKind, JobRun, Outcome, job_kinds
from tasks.models import ApiToken, Job
from tasks.selectors import erasure_count
from tasks.services import job_create

# A user who keeps writing could keep an erasure going for ever; after this many passes the
# job ends with what it caught (their later messages need another erasure).
MAX_PASSES = 10


def erasure_job_create(username: str, *, created_by: Any = None, token: ApiToken | None = None) -> Job:
    return job_create(Job.Kind.ERASE, subject=username, progress_unit="messages", created_by=created_by, token=token)


def erasure_wait_seconds() -> float:
    """Take one of MESSY_ERASE_RATE_PER_MINUTE erasure starts of the current minute, shared by
    every worker through a Redis counter; 0 when taken, else the seconds until the next minute."""
    now = time.time()
    window = int(now // 60)
    counter = key("jobs", "erase-rate", str(window))
    pipe = redis_client().pipeline(transaction=True)
    pipe.incr(counter)
    pipe.expire(counter, 120)
    started, _ = pipe.execute()
    if started <= settings.MESSY_ERASE_RATE_PER_MINUTE:
        return 0
    return (window + 1) * 60 - now + 0.1


def erasure_run(run: JobRun) -> Outcome:
    username = run.job.subject
    erasure_fence_raise(run.job)
    state: dict[str, Any] = {"stored": 0, "staged": 0, **run.job.checkpoint}
    if "total" not in state:
        state["total"] = user_messages_count(username)
        with transaction.atomic():
            run.checkpoint(done=0, total=state["total"], message="Erasing stored messages.", state=state)
    for _ in range(MAX_PASSES):
        in_flight = messages_erase_staged(username, run.heartbeat)
        state["staged"] += len(in_flight)
        if not messages_erase_wait(in_flight, run.heartbeat):
            raise JobFailed(
                "Some of the user's messages were still being stored by a drain worker when the wait "
                "ended; nothing is lost by running the erasure again."
            )
        state = _stored_erase(run, username, state)
        if not in_flight:
            break
    messages_erase_from_disk(run.heartbeat)
    stats_republish()
    return Outcome({"messages_erased": state["stored"], "staged_erased": state["staged"]})


def _stored_erase(run: JobRun, username: str, state: dict[str, Any]) -> dict[str, Any]:
    while True:
        with transaction.atomic():
            erased = messages_erase_stored(username, settings.MESSY_ERASE_BATCH_SIZE)
            state = {**state, "stored": state["stored"] + erased}
            total = max(state["total"], state["stored"])
            run.checkpoint(
                done=state["stored"], total=total, message=f"{state['stored']:,} messages erased.", state=state
            )
        # Only an empty chunk says the user has nothing left: a short one may just mean that
        # retention (or a second erasure) deleted some of the rows this chunk had picked, so
        # it is followed at once by one more look.
        if not erased:
            return state
        if erased == settings.MESSY_ERASE_BATCH_SIZE:
            run.pause_point()


class ErasureKind(JobKind):
    scope = ApiToken.Scope.ERASE
    # An erasure's exception text could quote the username; its type says enough.
    error_text_private = True

    def json_extra(self, job: Job, memo: dict[str, Any]) -> dict[str, Any]:
        if "erasures" not in memo:  # once per listing, however many erasures it shows
            memo["erasures"] = erasure_count()
        return {"erasures_performed": memo["erasures"]}

    def run(self, run: JobRun) -> Outcome:
        return erasure_run(run)

    def before_start(self, job: Job) -> Deferral | None:
        wait = erasure_wait_seconds()
        return Deferral(wait, "Waiting for the erasure rate limit.") if wait else None

    def on_finish(self, job_id: Any) -> None:
        fence_hand_over(job_id)

    def on_success(self, job: Job) -> None:
        """Count the erasure: the only trace it leaves."""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tasks_erasure_tally (id, erasures) VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET erasures = tasks_erasure_tally.erasures + 1"
            )


job_kinds.register(Job.Kind.ERASE, ErasureKind())
