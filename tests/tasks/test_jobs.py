"""The job lifecycle: every status transition, claims, heartbeats, cancel, hand-over,
recovery of jobs whose worker died, and pruning."""

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from messages.models import Message
from project.storage import s3_client
from tasks import services
from tasks.models import Job, RejectedRecord
from tasks.tasks import job_run
from tests.tasks.conftest import import_job, ndjson, rows

pytestmark = pytest.mark.django_db(transaction=True)


def erase_job() -> Job:
    return services.job_create(Job.Kind.ERASE, subject="someone", enqueue=False)


def held_run(job: Job, owner: str = "w1") -> services.JobRun:
    assert services.job_claim(job.pk, owner)
    job.refresh_from_db()
    return services.JobRun(job, owner, deadline=float("inf"))


def test_a_new_job_is_queued_with_nothing_started():
    job = erase_job()
    assert (job.status, job.started_at, job.finished_at, job.attempts) == ("queued", None, None, 0)


def test_claiming_a_queued_job_makes_it_running_for_exactly_one_worker():
    job = erase_job()
    assert services.job_claim(job.pk, "w1")
    assert not services.job_claim(job.pk, "w2")
    job.refresh_from_db()
    assert (job.status, job.owner) == ("running", "w1")
    assert job.started_at is not None and job.heartbeat_at is not None


def test_a_running_job_with_a_stale_heartbeat_is_taken_over_and_the_old_worker_can_change_nothing():
    job = erase_job()
    old = held_run(job, "w1")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.job_claim(job.pk, "w2")
    job.refresh_from_db()
    assert (job.owner, job.attempts) == ("w2", 1)
    with pytest.raises(services.JobStopped):
        old.checkpoint(done=5, message="late", state={"x": 1})
    assert not services._finish(job, "w1", Job.Status.SUCCEEDED, result={"bad": True})
    job.refresh_from_db()
    assert (job.status, job.progress_done, job.result) == ("running", 0, None)


def test_a_checkpoint_records_progress_and_state_and_refreshes_the_heartbeat():
    job = erase_job()
    run = held_run(job)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    with transaction.atomic():
        run.checkpoint(done=3, total=10, message="three", state={"stored": 3})
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total, job.progress_message, job.checkpoint) == (
        3,
        10,
        "three",
        {"stored": 3},
    )
    assert job.heartbeat_at and timezone.now() - job.heartbeat_at < timedelta(seconds=5)


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_finishing_happens_once_and_wipes_the_owner_and_subject(status):
    job = erase_job()
    held_run(job)
    assert services._finish(job, "w1", status, error="boom" if status == "failed" else "", result={"n": 1})
    assert not services._finish(job, "w1", status, result={"n": 2})
    job.refresh_from_db()
    assert (job.status, job.owner, job.subject, job.result) == (status, "", "", {"n": 1})
    assert job.finished_at is not None


def test_cancelling_a_queued_job_finishes_it_at_once_and_a_later_claim_fails():
    job = erase_job()
    assert services.job_cancel(job)
    job.refresh_from_db()
    assert (job.status, job.subject) == ("cancelled", "")
    assert not services.job_claim(job.pk, "w1")
    assert services.job_run(job.pk) == "skipped"


def test_cancelling_a_finished_job_is_refused():
    job = erase_job()
    held_run(job)
    services._finish(job, "w1", Job.Status.SUCCEEDED, result={})
    assert not services.job_cancel(job)


def test_a_running_job_stops_at_its_next_batch_when_cancelled_and_that_batch_is_rolled_back(s3, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 10
    job = import_job(ndjson(rows(50)))
    batches = []

    def on_progress(current: Job) -> None:
        batches.append(current.progress_done)
        if len(batches) == 2:
            services.job_cancel(current)  # the API call, arriving while batch 3 is read

    assert services.job_run(job.pk, on_progress=on_progress) == "cancelled"
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.checkpoint["records"] == 20
    assert Message.objects.count() == 20


def test_a_run_that_used_its_time_hands_over_and_the_next_run_resumes_from_the_checkpoint(s3, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 10
    settings.MESSY_JOB_RUN_SECONDS = -1
    job = import_job(ndjson(rows(35)))
    assert services.job_run(job.pk) == "handed_over"
    job.refresh_from_db()
    assert (job.status, job.owner, job.checkpoint["records"]) == ("queued", "", 10)
    settings.MESSY_JOB_RUN_SECONDS = 600
    assert services.job_run(job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.status, (job.result or {})["stored"], job.attempts) == ("succeeded", 35, 0)
    assert Message.objects.count() == 35


def test_recovery_publishes_jobs_whose_worker_died_and_gives_up_after_too_many_deaths(settings):
    settings.MESSY_JOB_MAX_ATTEMPTS = 2
    alive, dead, exhausted = erase_job(), erase_job(), erase_job()
    for job in (alive, dead, exhausted):
        held_run(job, f"w-{job.pk}")
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk__in=[dead.pk, exhausted.pk]).update(heartbeat_at=long_ago)
    Job.objects.filter(pk=exhausted.pk).update(attempts=2)
    assert services.jobs_recover() == 1
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses == {alive.pk: "running", dead.pk: "running", exhausted.pk: "failed"}
    exhausted.refresh_from_db()
    assert "given up" in exhausted.error and exhausted.subject == ""
    # What recovery published is the dead job's run: it claims the job and finishes it.
    assert services.job_run(dead.pk) == "succeeded"


def test_recovery_publishes_again_a_queued_job_whose_task_was_lost_but_not_a_fresh_one(settings):
    lost = erase_job()
    erase_job()  # a fresh one, published a moment ago
    Job.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.jobs_recover() == 1
    lost.refresh_from_db()
    assert lost.heartbeat_at and timezone.now() - lost.heartbeat_at < timedelta(seconds=5)
    assert services.jobs_recover() == 0


def test_pruning_deletes_old_finished_jobs_in_chunks_with_their_reports(s3, settings):
    settings.MESSY_JOB_PRUNE_CHUNK = 2
    old = [import_job(ndjson(["{bad"])) for _ in range(5)]
    for job in old:
        assert services.job_run(job.pk) == "succeeded"
    recent = import_job(ndjson(["{bad"]))
    services.job_run(recent.pk)
    unfinished = erase_job()
    Job.objects.filter(pk__in=[job.pk for job in old]).update(finished_at=timezone.now() - timedelta(days=31))
    Job.objects.filter(pk=unfinished.pk).update(created_at=timezone.now() - timedelta(days=90))
    assert services.jobs_prune() == 5
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, unfinished.pk}
    listed = s3_client().list_objects_v2(Bucket=settings.S3_BUCKET, Prefix=settings.MESSY_JOB_S3_PREFIX)
    keys = {item["Key"] for item in listed.get("Contents", [])}
    assert not any(str(job.pk) in key for job in old for key in keys)
    assert services.job_s3_key(recent.pk, services.REPORT) in keys


def test_the_import_task_takes_only_a_json_id(s3):
    job = import_job(ndjson(rows(3)))
    assert job_run.apply(args=json.loads(json.dumps([str(job.pk)]))).get() == "succeeded"
    assert RejectedRecord.objects.count() == 0


def test_a_migration_schedules_recovery_and_pruning_on_the_jobs_queue_and_may_run_twice():
    import importlib

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    migration = importlib.import_module("tasks.migrations.0002_housekeeping_schedules")
    for _ in range(2):  # the test database is flushed between tests: run it as migrate would
        migration.schedules_create(apps, None)
    schedules = {task.task: task for task in PeriodicTask.objects.filter(task__startswith="tasks.")}
    assert set(schedules) == {"tasks.recover", "tasks.prune"}
    assert schedules["tasks.recover"].interval.every == 30 and schedules["tasks.recover"].queue == "jobs"
