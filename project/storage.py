"""S3 access shared by stats (the blob) and tasks (uploaded files, reports).

Any S3-compatible endpoint works: AWS when S3_ENDPOINT_URL is empty, otherwise the given one
(a local server in development and tests). Path-style addressing keeps bucket names out of
host names, which local servers need.
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
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=settings.S3_REGION,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID or None,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY or None,
        config=_config(attempts),
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
    """Create the bucket if it is missing. It stays private: readers get presigned URLs."""
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


def bucket_cors_set(origins: list[str], bucket: str | None = None) -> None:
    """Let pages from these origins read objects (GET/HEAD) with a presigned URL, as the stats
    dashboard does after following /stat/get/. Replaces the bucket's CORS rules."""
    s3_client().put_bucket_cors(
        Bucket=bucket or settings.S3_BUCKET,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": list(origins),
                    "AllowedMethods": ["GET", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag", "Last-Modified"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )


def presigned_get_url(key: str, expires_in: int, bucket: str | None = None) -> str:
    return s3_public_client().generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket or settings.S3_BUCKET, "Key": key},
        ExpiresIn=expires_in,
    )
