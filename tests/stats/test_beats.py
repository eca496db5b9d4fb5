"""Two real beat processes and a real worker: stats are published once per calendar minute,
however many beats send the task."""

import collections
import re
import time

import pytest
from django.conf import settings as django_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.stats.conftest import celery_start, publish_schedule_migrated, stats_worker_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.system]

PUBLISHED = re.compile(r"published stats blob generated at (\d{4}-\d\d-\d\dT\d\d:\d\d):")
# Celery's own line for a task that returned; the service says published=False when this
# minute's blob was already out.
SKIPPED = re.compile(r"Task stats\.publish\[[-0-9a-f]+\] succeeded in [\d.e-]+s: \{'published': False")


def test_two_beats_sending_every_few_seconds_publish_once_per_minute(own_s3, subprocess_env, tmp_path):
    # The schedule as migrated, then made to fire every 3 s: both beats send about forty
    # tasks a minute, at different moments, and only one per minute may publish.
    publish_schedule_migrated()
    every_3s, _ = IntervalSchedule.objects.get_or_create(every=3, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task="stats.publish").update(interval=every_3s, crontab=None)
    env = {**subprocess_env, "S3_ENDPOINT_URL": own_s3.endpoint, "S3_BUCKET": django_settings.S3_BUCKET}
    worker_log = tmp_path / "worker.log"
    beat = ["beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile="]
    processes = [
        stats_worker_start(env, worker_log),
        celery_start(beat, env, tmp_path / "beat1.log"),
        celery_start(beat, env, tmp_path / "beat2.log"),
    ]
    try:
        # Two minutes published, and at least three tasks turned away because their minute's
        # blob was out. Waiting for the skips too matters when the test starts at :58: then
        # both minutes are published within a few seconds, before the beats send many tasks.
        deadline = time.monotonic() + 180  # start-up on a busy machine, then two minutes to begin
        minutes: collections.Counter[str] = collections.Counter()
        skipped = 0
        while time.monotonic() < deadline and (len(minutes) < 2 or skipped < 3):
            time.sleep(1)
            log = worker_log.read_text()
            minutes, skipped = collections.Counter(PUBLISHED.findall(log)), len(SKIPPED.findall(log))
        sent = [(tmp_path / f"beat{i}.log").read_text().count("Sending due task") for i in (1, 2)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)

    assert len(minutes) >= 2, worker_log.read_text()[-3000:]
    assert set(minutes.values()) == {1}, minutes
    assert min(sent) > 0, "both beats sent tasks"
    assert skipped >= 3, worker_log.read_text()[-3000:]
