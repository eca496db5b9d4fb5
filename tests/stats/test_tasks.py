import json
import time
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings as django_settings
from django_celery_beat.models import PeriodicTask

from project.storage import s3_client
from stats import selectors
from stats.services import publish
from stats.tasks import publish_when_a_worker_starts, stats_publish
from tests.conftest import queued_tasks
from tests.stats.conftest import payload, publish_schedule_migrated, stats_worker_start, store

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_migration_schedules_the_publish_every_minute_and_a_catch_up_every_30_s_on_the_stats_queue():
    publish_schedule_migrated()

    every_minute = PeriodicTask.objects.get(name="stats: publish the blob")
    catch_up = PeriodicTask.objects.get(name="stats: publish a minute whose publisher died")

    assert {every_minute.task, catch_up.task} == {"stats.publish"}
    assert every_minute.enabled and every_minute.queue == "stats" and every_minute.interval is None
    crontab = every_minute.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week) == (
        "*",
        "*",
        "*",
        "*",
        "*",
    )
    assert catch_up.enabled and catch_up.queue == "stats" and catch_up.crontab is None
    assert catch_up.interval.schedule.run_every.total_seconds() == 30
    # Every send in a minute's second half comes after a dead publisher's lease has lapsed.
    assert publish.PUBLISH_LEASE_SECONDS < 30
    # The task is killed before its lease lapses: two publishes of a minute never overlap.
    assert stats_publish.time_limit is not None and stats_publish.time_limit < publish.PUBLISH_LEASE_SECONDS


def test_the_publish_task_publishes_and_reports_it(stats_bucket):
    result = stats_publish.apply(kwargs=json.loads(json.dumps({"force": False})))

    assert result.successful()
    published = selectors.stats_published()
    assert published is not None
    assert result.get() == {"published": True, "generated_at": published["generated_at"]}


def test_an_upload_that_s3_refuses_is_not_retried(stats_bucket, settings, caplog):
    settings.S3_BUCKET = "x"  # S3 answers 400 InvalidBucketName: retrying cannot help

    result = stats_publish.apply()

    assert result.failed()
    assert "InvalidBucketName" in str(result.result)
    messages = [record.getMessage() for record in caplog.records if record.name == "stats.tasks"]
    assert len(messages) == 1 and messages[0].startswith("stats publish failed for good"), messages


def test_a_publish_cut_off_by_its_time_limit_is_retried(stats_bucket, monkeypatch, caplog):
    """Celery raises SoftTimeLimitExceeded in the task when S3 is slower than the limit."""
    upload, uploads = publish._blob_upload, []

    def too_slow_once(body: bytes) -> None:
        uploads.append(body)
        if len(uploads) == 1:
            raise SoftTimeLimitExceeded()
        upload(body)

    monkeypatch.setattr(publish, "_blob_upload", too_slow_once)

    result = stats_publish.apply()

    assert result.successful() and result.get()["published"], result.result
    messages = [record.getMessage() for record in caplog.records if record.name == "stats.tasks"]
    assert messages[0].startswith("stats publish failed (SoftTimeLimitExceeded()); retry 1 of 7"), messages


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.system
def test_publishing_is_retried_while_s3_is_down_and_resumes_when_it_is_back(
    own_s3, minute, subprocess_env, tmp_path: Path
):
    store([payload("alice", "Austin", "TX", minute)])
    env = {**subprocess_env, "S3_ENDPOINT_URL": own_s3.endpoint, "S3_BUCKET": django_settings.S3_BUCKET}
    log_path = tmp_path / "worker.log"
    worker = stats_worker_start(env, log_path)
    try:
        own_s3.stop()
        stats_publish.delay()
        wait_until(lambda: "retry 2 of 7" in log_path.read_text(), 60, "two failed attempts to be logged")
        assert selectors.stats_published() is None

        own_s3.start()  # with its data (the local server is persistent)

        wait_until(lambda: selectors.stats_published() is not None, 60, "the publish to succeed")
        obj = s3_client().get_object(Bucket=django_settings.S3_BUCKET, Key=django_settings.STATS_BLOB_KEY)
        assert json.loads(obj["Body"].read())["totals"]["messages"] == 1
        assert "stats publish failed (EndpointConnectionError" in log_path.read_text()
    finally:
        worker.terminate()
        worker.wait(20)


def test_a_starting_worker_asks_for_a_publish_that_keeps_to_once_a_minute(settings):
    publish_when_a_worker_starts()
    assert queued_tasks("stats") == [("stats.publish", {})]
