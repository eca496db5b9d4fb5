"""Publishing the stats blob to S3, at most once a minute, and asking for a publish.

Documented in docs/stats.md.
"""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from project.celery import task_publish
from project.redis import key, redis_client
from project.storage import bucket_prepare, s3_client
from stats.selectors import published_marker_key, stats_blob_build, stats_blob_encode
from stats.services.rollups import rollups_fold, top_users_rebuild_if_stale

logger = logging.getLogger(__name__)

# Every presigned URL is different (it carries its signing time), so a cache keyed on the URL
# rarely sees it twice; a minute matches how often the blob changes.
BLOB_CACHE_CONTROL = "private, max-age=60"
# A publisher holds its minute's claim for at most this long. The publish task's hard time
# limit (stats.tasks) is shorter, so a publisher still running never loses it. The claim of a
# publisher that died (its host lost mid-publish, in the minute's first seconds, when the beat
# sends) lapses before the minute's second half, where one of the beat's catch-up sends (every
# 30 s, stats migration 0007) always falls and publishes the minute.
PUBLISH_LEASE_SECONDS = 20
# A published minute's claim says so past the minute's end, so a late duplicate (a second beat,
# a redelivered task, a catch-up) still finds it.
_PUBLISHED_TTL_SECONDS = 120

# A forced publish takes the minute's claim unless another publisher holds its lease: a minute
# already published is published again, but never by two publishers at once.
_CLAIM_TAKE_FORCED = """
local held = redis.call("GET", KEYS[1])
if held and held ~= "published" then return 0 end
redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
return 1
"""

# Deletes the claim only if it is still ours.
_CLAIM_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


class PublishInProgress(Exception):
    """A forced publish found another publisher holding the minute's lease. Retry it: the blob
    that publisher is uploading may have been built before what the forced publish is for."""


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    published: bool
    generated_at: str | None = None


def publish_claim_key(minute: datetime) -> str:
    return key("stats", "publish", minute.strftime("%Y%m%dT%H%MZ"))


def publish_request_key() -> str:
    return key("stats", "publish-requested")


def _blob_upload(body: bytes) -> None:
    """One PUT of the whole object: S3 replaces an object atomically, so a reader gets the old
    blob or the new one, never part of one (a multipart upload would be just as atomic, but
    the blob is a few kilobytes). The bucket is prepared (project.storage.bucket_prepare: what
    the opt-ins allow) once per process, and again when the PUT finds it missing and Messy may
    create it (a new S3 endpoint, a wiped local server)."""
    bucket = settings.S3_BUCKET
    bucket_prepare(bucket)
    put = {
        "Bucket": bucket,
        "Key": settings.STATS_BLOB_KEY,
        "Body": body,
        "ContentType": "application/json",
        "CacheControl": BLOB_CACHE_CONTROL,
    }
    try:
        s3_client().put_object(**put)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket" or not settings.S3_BUCKET_CREATE:
            raise
        bucket_prepare(bucket, again=True)
        s3_client().put_object(**put)


def stats_publish(*, force: bool = False, now: datetime | None = None) -> PublishOutcome:
    """Build the blob from the rollups and upload it to S3, then record in Redis that it is
    there. Runs at most once per calendar minute across every beat and worker: the minute is
    claimed with SET NX first, and a second caller in the same minute returns at once with
    published=False. The claim is a lease (PUBLISH_LEASE_SECONDS) until the blob is out, then
    it marks the minute published. `force` (a republish after an erasure) publishes a minute
    already published, but still takes its claim: while another publisher holds the lease it
    raises PublishInProgress, so a blob built before the erasure cannot land after this one.

    When building or uploading fails the claim is released, so a retry in the same minute can
    publish, and the error propagates (botocore, redis or database errors): the task decides
    what to retry.
    """
    now = now or timezone.now()
    client = redis_client()
    claim_key = publish_claim_key(now.replace(second=0, microsecond=0))
    token = uuid.uuid4().hex
    if force:
        if not client.eval(_CLAIM_TAKE_FORCED, 1, claim_key, token, PUBLISH_LEASE_SECONDS):
            raise PublishInProgress(claim_key)
    elif not client.set(claim_key, token, nx=True, ex=PUBLISH_LEASE_SECONDS):
        return PublishOutcome(published=False)
    try:
        # The drains' pending counts first: the fold's cost follows what was written since the
        # last fold, not how many messages are stored.
        rollups_fold()
        top_users_rebuild_if_stale()
        blob = stats_blob_build(now)
        _blob_upload(stats_blob_encode(blob))
    except BaseException:
        client.eval(_CLAIM_RELEASE, 1, claim_key, token)
        raise
    marker = {"generated_at": blob["generated_at"], "key": settings.STATS_BLOB_KEY}
    # Two keys, perhaps on two Redis Cluster slots: no MULTI. Lost between the two, the claim
    # lapses and a catch-up publishes the minute again, which is harmless.
    pipe = client.pipeline(transaction=False)
    pipe.set(published_marker_key(), json.dumps(marker))
    pipe.set(claim_key, "published", ex=_PUBLISHED_TTL_SECONDS)
    pipe.execute()
    logger.info("published stats blob generated at %s", blob["generated_at"])
    return PublishOutcome(published=True, generated_at=blob["generated_at"])


def stats_republish() -> bool:
    """Publish again now, outside the once-a-minute schedule: after an erasure, so the erased
    user leaves the published top lists without waiting for the next minute. Never raises
    (the beat publishes within a minute anyway); returns whether a task was sent."""
    return task_publish("stats.publish", force=True)


def stats_publish_request() -> bool:
    """Ask a worker to publish soon (/stat/get/ before the first publish). At most one request
    per STATS_RETRY_AFTER_SECONDS, so a crowd of waiting dashboards sends one task, not one
    each. Never raises: the caller is answering a request. Returns whether a task was sent."""
    try:
        if not redis_client().set(publish_request_key(), "1", nx=True, ex=settings.STATS_RETRY_AFTER_SECONDS):
            return False
    except Exception:
        logger.warning("could not request a stats publish; the beat schedule will publish", exc_info=True)
        return False
    return task_publish("stats.publish")
