"""The runbook's numbers on /metrics: build, broker queues, oldest staged message, last stats
publish, jobs by status (the dead-letter count is tests/messages/test_deadletters.py's)."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from messages import staging
from project import metrics as project_metrics
from project.redis import redis_client
from stats.selectors import published_marker_key
from tasks.models import Job

# The jobs collector reads the jobs table on every scrape.
pytestmark = pytest.mark.django_db


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_build_info_names_the_version_commit_and_runtimes(settings):
    settings.MESSY_GIT_COMMIT = "abc123"
    project_metrics.build_info.cache_clear()
    try:
        (labels, sample_value), *_ = [(dict(key[1]), v) for key, v in scrape().items() if key[0] == "messy_build_info"]
    finally:
        project_metrics.build_info.cache_clear()
    assert sample_value == 1
    assert labels["version"] == "0.1.0"
    assert labels["commit"] == "abc123"
    assert labels["python"].startswith("3.")
    assert labels["django"].startswith("5.")
    assert set(labels) == {"version", "commit", "python", "django", "celery"}


def test_broker_queue_lengths_count_every_priority_list_of_each_queue():
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.lpush("ingest", b"a", b"b", b"c")
    broker.lpush("ingest\x06\x163", b"d")
    broker.lpush("jobs", b"e")
    samples = scrape()
    assert value(samples, "messy_broker_queue_messages", queue="ingest") == 4
    assert value(samples, "messy_broker_queue_messages", queue="stats") == 0
    assert value(samples, "messy_broker_queue_messages", queue="jobs") == 1


def test_an_unreachable_broker_leaves_out_its_numbers_and_nothing_else(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    samples = scrape()
    assert not [key for key in samples if key[0] == "messy_broker_queue_messages"]
    assert value(samples, "messy_backlog_messages") == 0


def test_the_oldest_staged_message_age_comes_from_its_entry_id():
    assert value(scrape(), "messy_backlog_oldest_age_seconds") == 0
    accepted_ms = int(time.time() * 1000) - 90_000
    redis_client().xadd(staging.shards()[0].stream, {"m": b"{}"}, id=f"{accepted_ms}-0")
    assert 90 <= value(scrape(), "messy_backlog_oldest_age_seconds") < 100


def test_the_last_publish_age_is_read_from_the_publish_marker():
    samples = scrape()
    assert value(samples, "messy_stats_published") == 0
    assert not [key for key in samples if key[0] == "messy_stats_last_publish_age_seconds"]

    generated_at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    redis_client().set(published_marker_key(), json.dumps({"generated_at": generated_at, "key": "k"}))
    samples = scrape()
    assert value(samples, "messy_stats_published") == 1
    assert 300 <= value(samples, "messy_stats_last_publish_age_seconds") < 310


def test_jobs_are_counted_by_status_with_every_status_present():
    Job.objects.create(kind=Job.Kind.IMPORT, status=Job.Status.QUEUED)
    Job.objects.create(kind=Job.Kind.IMPORT, status=Job.Status.QUEUED)
    Job.objects.create(kind=Job.Kind.ERASE, status=Job.Status.FAILED)
    samples = scrape()
    assert {status: value(samples, "messy_jobs", status=status) for status in Job.Status.values} == {
        "queued": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
    }
