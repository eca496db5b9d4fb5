"""Erasure: remove every stored and staged message of one username, keeping rollups exact,
and leave no trace of who it was (only the count of erasures performed).

The messages app does the erasing (messages_erase_staged, messages_erase_wait,
messages_erase_stored: the stream, its dead letters, the memcached copies, the table and,
through stats, the rollups); this job orders the steps, checkpoints each chunk of stored
messages in the transaction that deletes it, and keeps the heartbeat going. Messages that
arrive while the job runs are caught by repeating the pass until a scan of the stream finds
nothing of the user.

The username lives in the job row only while the job is unfinished (it is needed to resume
after a worker died) and is never logged; the final transition wipes it.

Imports. An import stores its records straight through messages_persist, so an import queued
or running while the erasure runs could bring the user's messages back after the erasure
reported success. The erasure fences imports off instead of waiting for them (an import can
run for hours, and waiting would hold a jobs worker that the import itself may need): before
deleting anything it records a keyed digest of the username (an HMAC with a key derived from
SECRET_KEY; no name is kept) in tasks_erasure_fence, and every import batch skips, in the
transaction that stores it, the records whose username has a digest fencing it off, counting
them in the result as skipped_erased. The erasure's fence covers every import while it runs;
when it finishes it is handed to each import then unfinished (created before the erasure
reported success), and goes with that import. Imports created afterwards store the user again.

Ordering, with a PostgreSQL advisory lock: import batches and import creations hold it shared,
raising a fence and handing it over hold it exclusively. So a batch in flight when the fence
goes up commits before the erasure deletes anything (and its rows are deleted), a batch after
sees the fence, and the hand-over sees every import created before the erasure's success.
"""

import time
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils.crypto import salted_hmac

from messages.selectors import user_messages_count
from messages.services import messages_erase_staged, messages_erase_stored, messages_erase_wait
from project.redis import key, redis_client
from stats.services.publish import stats_republish
from tasks.kinds import Deferral, JobFailed, JobKind, JobRun, Outcome, job_kinds
from tasks.models import ApiToken, ErasureFence, Job
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


# Any constant that no other code uses for an advisory lock ("messy-erasure-fence", as digits).
FENCE_LOCK = 0x6D657373795F6665


def fence_lock_shared() -> None:
    """Hold the fence lock shared until the current transaction ends: for an import batch or
    an import job's creation, so that a fence going up or handed over waits for them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [FENCE_LOCK])


def _fence_lock_exclusive() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FENCE_LOCK])


def username_digest(username: str) -> str:
    """A keyed digest of a username: matches the same name again, and says nothing without
    SECRET_KEY (a plain hash of a name is reversed by hashing guesses)."""
    return salted_hmac("messy.tasks.erasure-fence", username, algorithm="sha256").hexdigest()


def erasure_fence_raise(erasure: Job) -> None:
    """From now on every import skips the user (see the module docstring). Idempotent."""
    with transaction.atomic():
        _fence_lock_exclusive()
        if not ErasureFence.objects.filter(erasure=erasure).exists():
            ErasureFence.objects.create(digest=username_digest(erasure.subject), erasure=erasure)


def _fence_hand_over(erasure_id: Any) -> None:
    """In the transaction that finishes the erasure: its fence passes to every import then
    unfinished, and is lifted for the rest."""
    digests = list(ErasureFence.objects.filter(erasure_id=erasure_id).values_list("digest", flat=True))
    if not digests:
        return  # never started, so never fenced
    _fence_lock_exclusive()
    unfinished = Job.objects.filter(kind=Job.Kind.IMPORT, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    ErasureFence.objects.bulk_create(
        [
            ErasureFence(digest=digest, import_job_id=job_id)
            for job_id in unfinished.values_list("pk", flat=True)
            for digest in digests
        ]
    )
    ErasureFence.objects.filter(erasure_id=erasure_id).delete()


def erased_digests(import_job_id: Any) -> set[str]:
    """The digests of the users an import must skip, inside the caller's transaction (which
    then holds the fence lock shared until it ends)."""
    fence_lock_shared()
    fences = ErasureFence.objects.filter(Q(erasure__isnull=False) | Q(import_job_id=import_job_id))
    return set(fences.values_list("digest", flat=True))


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
    # An erasure's exception text could quote the username; its type says enough.
    error_text_private = True

    def run(self, run: JobRun) -> Outcome:
        return erasure_run(run)

    def before_start(self, job: Job) -> Deferral | None:
        wait = erasure_wait_seconds()
        return Deferral(wait, "Waiting for the erasure rate limit.") if wait else None

    def on_finish(self, job_id: Any) -> None:
        _fence_hand_over(job_id)

    def on_success(self, job: Job) -> None:
        """Count the erasure: the only trace it leaves."""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tasks_erasure_tally (id, erasures) VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET erasures = tasks_erasure_tally.erasures + 1"
            )


job_kinds.register(Job.Kind.ERASE, ErasureKind())
