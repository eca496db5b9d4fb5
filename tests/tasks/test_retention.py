"""Retention: messages accepted before the cutoff go in chunks, newer ones stay, the rollups
stay equal to a recount (also while drains store new messages), and the job is tracked."""

import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from messages import services as message_services
from messages import staging
from messages.models import Message
from messages.services import WriteRequest, messages_accept
from messages.validation import MessageInput
from stats.models import Totals, UserCount
from stats.selectors import stats_blob_build
from stats.services.rollups import top_users_rebuild_if_stale
from tasks import services, tasks
from tasks.kinds import HandOver, JobRun
from tasks.models import Job
from tasks.retention import retention_cutoff, retention_job_create
from tests.conftest import queued_tasks
from tests.stats.recount import stats_blob_recount
from tests.tasks.conftest import assert_rollups_exact, payload, store

pytestmark = pytest.mark.django_db(transaction=True)

DAYS = 30


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def stored_at_ages(*days_ago: float, users: int = 3) -> int:
    """Store messages accepted that many days ago, in shared users, cities and states."""
    now = timezone.now()
    rows = [
        payload(f"u{i % users}", city=f"c{i % 2}", state=f"S{i % 2}", accepted_at=ms(now - timedelta(days=age)))
        for i, age in enumerate(days_ago)
    ]
    return store(rows)


def run(job: Job) -> Job:
    assert services.job_run(job.pk) == "succeeded"
    job.refresh_from_db()
    return job


def test_old_messages_go_in_chunks_new_ones_stay_and_the_rollups_equal_a_recount(settings):
    settings.MESSY_MESSAGE_RETENTION_DAYS = DAYS
    settings.MESSY_RETENTION_CHUNK = 4
    settings.STATS_TOP_USERS = settings.STATS_TOP_USERS_KEPT = 2
    now = timezone.now()
    cutoff = retention_cutoff(now, DAYS)
    old = [DAYS + 10] * 7 + [DAYS + 1] * 4
    stored_at_ages(*old, 1, 2, 3, 0)
    # The leader by old messages alone: retention must take it off the leaderboard.
    store([payload("oldtimer", accepted_at=ms(now - timedelta(days=DAYS + 5))) for _ in range(9)])
    # Either side of the cutoff, to the millisecond.
    store([payload("edge", accepted_at=ms(cutoff) - 1), payload("edge", accepted_at=ms(cutoff))])

    job = retention_job_create(now)
    assert job is not None and job.kind == Job.Kind.RETAIN
    job = run(job)

    deleted = len(old) + 9 + 1
    assert job.result == {"messages_deleted": deleted, "accepted_before": cutoff.isoformat()}
    assert (job.progress_done, job.progress_total, job.progress_unit) == (deleted, deleted, "messages")
    assert not Message.objects.filter(accepted_at__lt=cutoff).exists()
    assert Message.objects.count() == 5
    assert Message.objects.filter(username="edge").get().accepted_at == cutoff
    assert not UserCount.objects.filter(username="oldtimer").exists()
    assert_rollups_exact()
    # The next publish rebuilds the leaderboard retention marked stale; the stats then describe
    # exactly the retained messages.
    assert Totals.objects.get().top_users_stale is True
    top_users_rebuild_if_stale()
    assert stats_blob_build(now) == stats_blob_recount(now)
    assert ("stats.publish", {"force": True}) in queued_tasks("stats")


def test_the_job_deletes_chunk_by_chunk_and_resumes_from_its_checkpoint(settings, monkeypatch):
    settings.MESSY_MESSAGE_RETENTION_DAYS = DAYS
    settings.MESSY_RETENTION_CHUNK = 5
    stored_at_ages(*[DAYS + 2] * 12, 1)
    job = retention_job_create()
    assert job is not None
    seen: list[tuple[int, int | None]] = []

    def hand_over_after_first_chunk(run: JobRun) -> None:
        seen.append((run.job.progress_done, run.job.progress_total))
        raise HandOver()

    monkeypatch.setattr(JobRun, "pause_point", hand_over_after_first_chunk)
    assert services.job_run(job.pk) == "handed_over"
    assert seen == [(5, 12)]
    assert Message.objects.count() == 8
    assert_rollups_exact()
    monkeypatch.undo()
    job = run(job)
    assert (job.progress_done, job.progress_total) == (12, 12)
    assert job.result is not None and job.result["messages_deleted"] == 12
    assert Message.objects.count() == 1
    assert_rollups_exact()


def test_retention_while_drains_store_new_messages_leaves_the_rollups_exact(settings, monkeypatch):
    """Drains store new messages in the same users, cities and states while the job deletes old
    ones: each side changes the same rollup rows, and a recount agrees afterwards."""
    settings.MESSY_MESSAGE_RETENTION_DAYS = DAYS
    settings.MESSY_RETENTION_CHUNK = 40
    users = 7
    old_count = 1200
    stored_at_ages(*[DAYS + 1 + i % 5 for i in range(old_count)], users=users)
    stop = threading.Event()
    drained = threading.Semaphore(0)
    staged: list[str] = []
    errors: list[BaseException] = []

    def drain_forever() -> None:
        try:
            i = 0
            while not stop.is_set():
                inputs = [MessageInput(f"u{(i + k) % users}", f"c{k % 2}", f"S{k % 2}", f"new {i}") for k in range(15)]
                staged.extend(messages_accept(WriteRequest(inputs)).ids)
                message_services.messages_drain(staging.shards()[0], slot=0)
                drained.release()
                i += 1
        except BaseException as exc:
            errors.append(exc)
            drained.release()
        finally:
            connection.close()

    def wait_for_a_drain(run: JobRun) -> None:
        # Between two chunks: at least one drain commits here, whatever the threads' timing.
        assert drained.acquire(timeout=30)

    monkeypatch.setattr(JobRun, "pause_point", wait_for_a_drain)
    job = retention_job_create()
    assert job is not None
    drainer = threading.Thread(target=drain_forever)
    drainer.start()
    try:
        job = run(job)
    finally:
        stop.set()
        drainer.join(timeout=60)
    assert not errors, errors
    message_services.messages_drain(staging.shards()[0], slot=0)

    assert job.result is not None and job.result["messages_deleted"] == old_count
    assert job.progress_done == job.progress_total == old_count
    assert len(staged) >= 15 * (old_count // 40 - 1)
    assert set(map(str, Message.objects.values_list("id", flat=True))) == set(staged)
    assert_rollups_exact()
    out = io.StringIO()
    call_command("stats_reconcile", stdout=out)
    assert "Rollups match a recount of the messages." in out.getvalue()


def test_retention_is_off_by_default_and_the_periodic_task_then_creates_no_job():
    stored_at_ages(400, 1)
    assert tasks.retention_job_create() is None
    assert not Job.objects.exists()
    assert Message.objects.count() == 2


def test_the_periodic_task_creates_one_job_however_often_it_fires(settings):
    settings.MESSY_MESSAGE_RETENTION_DAYS = DAYS
    stored_at_ages(DAYS + 1)
    job_id = tasks.retention_job_create()
    assert job_id is not None
    assert tasks.retention_job_create() is None  # one is queued
    assert ("tasks.run_job", {}) in queued_tasks("jobs")
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)
    assert tasks.retention_job_create() is None  # one is running
    assert Job.objects.filter(kind=Job.Kind.RETAIN).count() == 1


def test_no_job_is_created_when_nothing_is_past_retention(settings):
    settings.MESSY_MESSAGE_RETENTION_DAYS = DAYS
    stored_at_ages(DAYS - 1, 0)
    assert retention_job_create() is None
    assert not Job.objects.exists()


def test_the_cutoff_falls_on_the_start_of_a_minute():
    now = datetime(2026, 11, 25, 12, 34, 56, 789_000, tzinfo=UTC)
    assert retention_cutoff(now, 30) == datetime(2026, 10, 26, 12, 34, tzinfo=UTC)


# Not transactional: the schedule comes from a data migration, and transactional tests flush it.
@pytest.mark.django_db
def test_the_periodic_task_runs_hourly_on_the_jobs_queue_and_expires():
    task = PeriodicTask.objects.get(task="tasks.retention")
    assert task.enabled and task.queue == "jobs"
    assert task.interval is not None and task.interval.schedule.run_every == timedelta(hours=1)
    assert task.expire_seconds == 3600
