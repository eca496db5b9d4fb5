import json
import multiprocessing
import os
import signal
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connections

from project.redis import redis_client
from project.storage import s3_client
from stats import selectors
from stats.services import publish
from tests.stats.conftest import payload, store

pytestmark = pytest.mark.django_db(transaction=True)


def blob_in_s3() -> tuple[dict, dict]:
    obj = s3_client().get_object(Bucket=django_settings.S3_BUCKET, Key=django_settings.STATS_BLOB_KEY)
    return json.loads(obj["Body"].read()), obj


def test_publishing_uploads_the_blob_as_json_to_a_private_bucket_it_creates(stats_bucket, minute):
    store([payload("alice", "Austin", "TX", minute)])

    outcome = publish.stats_publish(now=minute)

    assert outcome.published
    blob, obj = blob_in_s3()
    assert blob == selectors.stats_blob_build(minute)
    assert obj["ContentType"] == "application/json"
    assert obj["CacheControl"] == publish.BLOB_CACHE_CONTROL
    acl = s3_client().get_bucket_acl(Bucket=stats_bucket)
    assert [grant["Grantee"].get("URI") for grant in acl["Grants"]] == [None], "only the owner may read"
    cors = s3_client().get_bucket_cors(Bucket=stats_bucket)["CORSRules"]
    assert cors[0]["AllowedOrigins"] == django_settings.STATS_CORS_ALLOWED_ORIGINS
    assert selectors.stats_published() == {"generated_at": "2026-11-25T12:34:56.000Z", "key": "stats/latest.json"}


def test_a_second_publish_in_the_same_minute_does_nothing_and_the_next_minute_publishes(stats_bucket, minute):
    assert publish.stats_publish(now=minute).published
    store([payload("alice", "Austin", "TX", minute)])

    assert not publish.stats_publish(now=minute + timedelta(seconds=3)).published
    assert blob_in_s3()[0]["totals"]["messages"] == 0

    assert publish.stats_publish(now=minute + timedelta(minutes=1)).published
    assert blob_in_s3()[0]["totals"]["messages"] == 1


def test_a_published_minute_stays_marked_past_its_end_so_late_duplicates_do_nothing(stats_bucket, minute):
    assert publish.stats_publish(now=minute).published
    claim = publish.publish_claim_key(minute.replace(second=0))
    assert redis_client().get(claim) == b"published"
    assert redis_client().ttl(claim) > 60


def _publish_and_die_uploading(now):
    """A publisher whose host is lost while it uploads: SIGKILL, nothing cleaned up."""
    publish._blob_upload = lambda body: os.kill(os.getpid(), signal.SIGKILL)
    publish.stats_publish(now=now)


def test_a_minute_whose_publisher_died_mid_publish_is_published_once_its_lease_lapses(
    stats_bucket, minute, monkeypatch
):
    monkeypatch.setattr(publish, "PUBLISH_LEASE_SECONDS", 2)
    start = minute.replace(second=0)
    connections.close_all()  # the publisher's process opens its own
    context = multiprocessing.get_context("fork")
    publisher = context.Process(target=_publish_and_die_uploading, args=(start + timedelta(seconds=1),))
    publisher.start()
    publisher.join(60)
    assert publisher.exitcode == -signal.SIGKILL
    claim = publish.publish_claim_key(start)
    left = redis_client().pttl(claim)
    assert redis_client().get(claim) != b"published" and 0 < left <= 2000, "a claim with a lease, left behind"

    time.sleep(left / 1000 + 0.1)
    assert publish.stats_publish(now=start + timedelta(seconds=40)).published  # the minute's catch-up
    assert not publish.stats_publish(now=start + timedelta(seconds=41)).published
    assert blob_in_s3()[0]["generated_at"] == "2026-11-25T12:34:40.000Z"


def test_a_forced_publish_ignores_the_minute_already_published(stats_bucket, minute):
    assert publish.stats_publish(now=minute).published
    store([payload("alice", "Austin", "TX", minute)])

    assert publish.stats_publish(now=minute, force=True).published
    assert blob_in_s3()[0]["totals"]["messages"] == 1


def test_a_forced_publish_waits_while_another_publisher_holds_the_minute(stats_bucket, minute):
    # Another publisher is uploading a blob it built before, say, an erasure.
    claim = publish.publish_claim_key(minute.replace(second=0))
    redis_client().set(claim, "another-publisher", ex=publish.PUBLISH_LEASE_SECONDS)

    with pytest.raises(publish.PublishInProgress):
        publish.stats_publish(now=minute, force=True)

    assert redis_client().get(claim) == b"another-publisher", "the other publisher's lease is left alone"
    assert selectors.stats_published() is None


def test_a_forced_publish_holds_the_minute_like_any_other(stats_bucket, minute):
    assert publish.stats_publish(now=minute, force=True).published

    claim = publish.publish_claim_key(minute.replace(second=0))
    assert redis_client().get(claim) == b"published"
    assert not publish.stats_publish(now=minute).published


def test_a_failed_upload_releases_the_minute_so_a_retry_can_publish(stats_bucket, minute, settings):
    settings.S3_BUCKET = "x"  # too short a name: S3 refuses to create it

    with pytest.raises(Exception, match="InvalidBucketName"):
        publish.stats_publish(now=minute)

    assert redis_client().get(publish.publish_claim_key(minute.replace(second=0))) is None
    assert selectors.stats_published() is None
    settings.S3_BUCKET = stats_bucket
    assert publish.stats_publish(now=minute + timedelta(seconds=5)).published


def test_a_bucket_wiped_after_the_first_publish_is_created_again(stats_bucket, minute):
    assert publish.stats_publish(now=minute).published
    s3_client().delete_object(Bucket=stats_bucket, Key=django_settings.STATS_BLOB_KEY)
    s3_client().delete_bucket(Bucket=stats_bucket)

    assert publish.stats_publish(now=minute + timedelta(minutes=1)).published
    assert blob_in_s3()[0]["generated_at"] == "2026-11-25T12:35:56.000Z"


def _publish_at(start, now):
    """One 'beat' in its own process: wait for the others, then publish."""
    start.wait(60)
    return publish.stats_publish(now=now).published


def test_concurrent_publishers_in_separate_processes_publish_once_per_minute(stats_bucket, minute):
    connections.close_all()  # each process opens its own connections
    context = multiprocessing.get_context("fork")
    publishers = 4
    with context.Manager() as manager, context.Pool(publishers) as pool:
        for offset in (0, 1, 2):
            start = manager.Barrier(publishers)
            now = minute + timedelta(minutes=offset, seconds=offset * 7)
            outcomes = pool.starmap(_publish_at, [(start, now)] * publishers)
            assert sorted(outcomes) == [False, False, False, True], f"minute {offset}"
    assert blob_in_s3()[0]["generated_at"] == "2026-11-25T12:37:10.000Z"
