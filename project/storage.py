"""S3 access shared by stats (the blob) and tasks (uploaded files, reports).

Any S3-compatible endpoint (S3_ENDPOINT_URL), or AWS with boto3's own credentials and endpoint
when it is empty. The bucket is the operator's unless S3_BUCKET_CREATE or S3_BUCKET_CORS_MANAGE
opt in (bucket_prepare). Documented in docs/operations.md ("S3: a real local store, and AWS").
"""

import functools
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings


def _config(attempts: int = 3) -> Config:
    return Config(
        connect_timeout=settings.S3_TIMEOUT,
        read_timeout=settings.S3_TIMEOUT,
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )


def _client(endpoint_url: str | None, attempts: int = 3) -> Any:
    credentials = {}
    if settings.S3_ACCESS_KEY_ID or settings.S3_SECRET_ACCESS_KEY:
        credentials = {
            "aws_access_key_id": settings.S3_ACCESS_KEY_ID,
            "aws_secret_access_key": settings.S3_SECRET_ACCESS_KEY,
        }
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=settings.S3_REGION,
        config=_config(attempts),
        **credentials,
    )


@functools.cache
def s3_client() -> Any:
    """The client the service itself uses (one per process)."""
    return _client(settings.S3_ENDPOINT_URL)


@functools.cache
def s3_probe_client() -> Any:
    """For health checks (/status): one attempt, so an unreachable S3 costs one S3_TIMEOUT."""
    return _client(settings.S3_ENDPOINT_URL, attempts=1)


@functools.cache
def s3_public_client() -> Any:
    """The client that signs URLs handed to browsers, which may reach S3 by another address."""
    return _client(settings.S3_PUBLIC_ENDPOINT_URL)


def bucket_ensure(bucket: str | None = None) -> None:
    """Create the bucket if it is missing, whatever S3_BUCKET_CREATE says (tests and
    bucket_prepare call it). It stays private: readers get presigned URLs."""
    bucket = bucket or settings.S3_BUCKET
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.S3_REGION != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.S3_REGION}
        try:
            client.create_bucket(**kwargs)
        except ClientError as create_exc:
            if create_exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                raise


# Messy's own CORS rule carries this ID, so it is told apart from the rules others keep on
# the same bucket.
CORS_RULE_ID = "messy-stats-dashboard"


def bucket_cors_rule(origins: list[str]) -> dict[str, Any]:
    """Pages from these origins may read objects (GET/HEAD) with a presigned URL, as the stats
    dashboard does after following /stat/get/."""
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "Last-Modified"],
        "MaxAgeSeconds": 3600,
    }


def _cors_rule_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    # S3 servers may reorder lists and fill in defaults when they store a rule.
    lists = ("AllowedOrigins", "AllowedMethods", "AllowedHeaders", "ExposeHeaders")
    return (rule.get("ID"), *(tuple(sorted(rule.get(name, []))) for name in lists), rule.get("MaxAgeSeconds", 0))


def bucket_cors_ensure(origins: list[str], bucket: str | None = None) -> bool:
    """Keep Messy's CORS rule for `origins` among the bucket's rules. Reads the rules first and
    writes only when ours is missing or different, keeping every other rule as it is (S3 has
    no call that changes one rule: a put replaces them all). Returns whether it wrote."""
    bucket = bucket or settings.S3_BUCKET
    client = s3_client()
    try:
        rules = client.get_bucket_cors(Bucket=bucket)["CORSRules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchCORSConfiguration":
            raise
        rules = []
    ours = bucket_cors_rule(origins)
    current = [rule for rule in rules if rule.get("ID") == CORS_RULE_ID]
    if len(current) == 1 and _cors_rule_key(current[0]) == _cors_rule_key(ours):
        return False
    others = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [*others, ours]})
    return True


# (endpoint, bucket, opt-ins, origins) this process has prepared.
_buckets_prepared: set[tuple[Any, ...]] = set()


def bucket_prepare(bucket: str | None = None, *, again: bool = False) -> None:
    """What Messy does to the bucket itself before writing to it, each step only when opted
    in: create it when missing (S3_BUCKET_CREATE), and keep the dashboard's CORS rule for
    STATS_CORS_ALLOWED_ORIGINS (S3_BUCKET_CORS_MANAGE). Once per process for the same endpoint,
    bucket and settings; `again` repeats it (a write found the bucket missing)."""
    bucket = bucket or settings.S3_BUCKET
    create, cors = settings.S3_BUCKET_CREATE, settings.S3_BUCKET_CORS_MANAGE
    prepared = (settings.S3_ENDPOINT_URL, bucket, create, cors, tuple(settings.STATS_CORS_ALLOWED_ORIGINS))
    if prepared in _buckets_prepared and not again:
        return
    if create:
        bucket_ensure(bucket)
    if cors:
        bucket_cors_ensure(settings.STATS_CORS_ALLOWED_ORIGINS, bucket)
    _buckets_prepared.add(prepared)


def buckets_prepared_forget() -> None:
    """Prepare every bucket again at its next use (tests that switch S3 servers)."""
    _buckets_prepared.clear()


def presigned_get_url(key: str, expires_in: int, bucket: str | None = None) -> str:
    return s3_public_client().generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket or settings.S3_BUCKET, "Key": key},
        ExpiresIn=expires_in,
    )
