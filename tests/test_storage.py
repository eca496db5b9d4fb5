"""S3 as project/storage.py uses it: the persistent local server (scripts/s3.sh) keeps the
blob and the jobs' files across a restart; with no endpoint or keys configured, boto3's own
chain and endpoint variables are used (the local server standing in for AWS); creating the
bucket and managing its CORS happen only when opted in, and CORS rules are merged, never
replaced."""

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from project import storage
from project.storage import CORS_RULE_ID, bucket_ensure, presigned_get_url, s3_client
from stats.services.publish import stats_publish
from tasks.importing import import_job_create
from tests.harness import S3_LOCAL_ACCESS_KEY_ID, S3_LOCAL_SECRET_ACCESS_KEY, S3Server

FOREIGN_RULE = {
    "ID": "someone-elses",
    "AllowedOrigins": ["https://uploads.example"],
    "AllowedMethods": ["PUT"],
    "AllowedHeaders": ["content-type"],
    "MaxAgeSeconds": 60,
}


def clients_reset() -> None:
    storage.s3_client.cache_clear()
    storage.s3_probe_client.cache_clear()
    storage.s3_public_client.cache_clear()
    storage.buckets_prepared_forget()


@pytest.fixture
def bucket(s3_server: str, settings: Any) -> Iterator[str]:
    """A bucket name of its own on the session's server, not yet created."""
    settings.S3_BUCKET = f"t-storage-{uuid.uuid4().hex[:12]}"
    clients_reset()
    yield settings.S3_BUCKET
    clients_reset()


@pytest.fixture
def s3_calls(bucket: str) -> list[str]:
    """The S3 operations the service's client makes from now on."""
    calls: list[str] = []
    s3_client().meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def presigned_read(key: str) -> bytes:
    response = requests.get(presigned_get_url(key, 60), timeout=10)
    assert response.status_code == 200, response.text
    return response.content


# --- a restart keeps everything --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_restarted_local_s3_keeps_the_stats_blob_and_every_jobs_files(settings: Any) -> None:
    server = S3Server().start()
    try:
        settings.S3_ENDPOINT_URL = settings.S3_PUBLIC_ENDPOINT_URL = server.endpoint
        settings.S3_BUCKET = "t-restart"
        clients_reset()
        published = stats_publish(force=True)
        job = import_job_create(io.BytesIO(b'{"username": "ana"}\n'), name="a.ndjson", enqueue=False)
        report_key = f"{settings.MESSY_JOB_S3_PREFIX}{job.pk}/report.ndjson"
        s3_client().put_object(Bucket=settings.S3_BUCKET, Key=report_key, Body=b"line 1: bad\n")

        for restart in range(2):
            server.stop()
            server.start()
            clients_reset()

            assert json.loads(presigned_read(settings.STATS_BLOB_KEY))["generated_at"] == published.generated_at
            assert presigned_read(job.params["key"]) == b'{"username": "ana"}\n'
            assert presigned_read(report_key) == b"line 1: bad\n"
            # Written after a restart, and still there after the next: the restarted server
            # hands out new file ids, never ones already used.
            s3_client().put_object(Bucket=settings.S3_BUCKET, Key=f"after-{restart}", Body=b"new")
        assert presigned_read("after-0") == presigned_read("after-1") == b"new"
        assert requests.get(f"{server.endpoint}/t-restart/{settings.STATS_BLOB_KEY}", timeout=10).status_code == 403
    finally:
        server.close()
        clients_reset()


# --- AWS mode: boto3's own chain -------------------------------------------------------------


@pytest.mark.parametrize("endpoint_variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_with_no_endpoint_or_keys_configured_boto3s_own_chain_and_endpoint_are_used(
    bucket: str, s3_server: str, settings: Any, monkeypatch: Any, endpoint_variable: str
) -> None:
    bucket_ensure(bucket)
    settings.S3_ENDPOINT_URL = settings.S3_PUBLIC_ENDPOINT_URL = None
    settings.S3_ACCESS_KEY_ID = settings.S3_SECRET_ACCESS_KEY = ""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_LOCAL_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_LOCAL_SECRET_ACCESS_KEY)
    monkeypatch.setenv(endpoint_variable, s3_server)
    clients_reset()

    client = s3_client()
    client.put_object(Bucket=bucket, Key="aws-mode", Body=b"through the chain")

    assert client.meta.endpoint_url == s3_server
    assert client._request_signer._credentials.method == "env"
    assert presigned_read("aws-mode") == b"through the chain"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    clients_reset()
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3_client().get_object(Bucket=bucket, Key="aws-mode")


def test_configured_keys_are_used_rather_than_the_chain(bucket: str, settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    clients_reset()

    bucket_ensure(bucket)

    assert s3_client()._request_signer._credentials.access_key == settings.S3_ACCESS_KEY_ID


# --- creating the bucket and managing its CORS are opt-in --------------------------------------


@pytest.mark.django_db
def test_with_the_opt_ins_off_the_bucket_is_neither_created_nor_its_cors_touched(
    bucket: str, settings: Any, s3_calls: list[str]
) -> None:
    settings.S3_BUCKET_CREATE = settings.S3_BUCKET_CORS_MANAGE = False

    with pytest.raises(ClientError, match="NoSuchBucket"):
        stats_publish(force=True)
    bucket_ensure(bucket)
    s3_client().put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [FOREIGN_RULE]})
    s3_calls.clear()
    assert stats_publish(force=True).published

    assert s3_calls == ["PutObject"]
    assert [rule["ID"] for rule in s3_client().get_bucket_cors(Bucket=bucket)["CORSRules"]] == [FOREIGN_RULE["ID"]]


@pytest.mark.django_db
def test_with_the_opt_ins_on_the_bucket_is_created_and_our_cors_rule_joins_the_others(
    bucket: str, settings: Any, s3_calls: list[str]
) -> None:
    settings.S3_BUCKET_CREATE = settings.S3_BUCKET_CORS_MANAGE = True
    settings.STATS_CORS_ALLOWED_ORIGINS = ["https://dash.example"]

    assert stats_publish(force=True).published
    assert "CreateBucket" in s3_calls
    s3_client().put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [FOREIGN_RULE, *s3_client().get_bucket_cors(Bucket=bucket)["CORSRules"]]},
    )

    # A new process (nothing remembered) finds our rule as it should be: it reads, writes nothing.
    storage.buckets_prepared_forget()
    s3_calls.clear()
    assert stats_publish(force=True).published
    assert s3_calls == ["HeadBucket", "GetBucketCors", "PutObject"]

    # The origins change: our rule is replaced, the other one kept.
    settings.STATS_CORS_ALLOWED_ORIGINS = ["https://dash.example", "https://other-dash.example"]
    assert stats_publish(force=True).published
    rules = {rule["ID"]: rule for rule in s3_client().get_bucket_cors(Bucket=bucket)["CORSRules"]}
    assert set(rules) == {FOREIGN_RULE["ID"], CORS_RULE_ID}
    assert sorted(rules[CORS_RULE_ID]["AllowedOrigins"]) == ["https://dash.example", "https://other-dash.example"]
    assert rules[FOREIGN_RULE["ID"]]["AllowedOrigins"] == FOREIGN_RULE["AllowedOrigins"]


def test_a_bucket_with_no_cors_rules_gets_ours_and_a_second_call_writes_nothing(bucket: str, settings: Any) -> None:
    bucket_ensure(bucket)

    assert storage.bucket_cors_ensure(["https://dash.example"], bucket)
    assert not storage.bucket_cors_ensure(["https://dash.example"], bucket)
    [rule] = s3_client().get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert rule["ID"] == CORS_RULE_ID and rule["AllowedMethods"] == ["GET", "HEAD"]
