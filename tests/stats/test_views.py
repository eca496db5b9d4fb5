import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.test import Client

from project.redis import redis_client, redis_client_reset
from stats.selectors import published_marker_key
from stats.services import publish
from tests.conftest import free_port, queued_tasks
from tests.stats.conftest import payload, store

pytestmark = pytest.mark.django_db(transaction=True)


def queued_publish_tasks() -> list[tuple[str, dict]]:
    """stats.publish tasks waiting in the broker's "stats" queue."""
    return [task for task in queued_tasks("stats") if task[0] == "stats.publish"]


def test_before_the_first_publish_it_answers_503_with_retry_after_and_asks_for_a_publish(
    stats_bucket, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = Client().get("/stat/get/")

    assert response.status_code == 503
    assert response["Retry-After"] == str(django_settings.STATS_RETRY_AFTER_SECONDS)
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "stats_not_published",
        "message": "No statistics published yet; the first is coming.",
    }
    assert len(queued_publish_tasks()) == 1


def test_a_crowd_waiting_for_the_first_publish_sends_one_publish_task(stats_bucket):
    for _ in range(5):
        assert Client().get("/stat/get/").status_code == 503

    assert len(queued_publish_tasks()) == 1


def test_it_redirects_to_a_presigned_url_that_expires_without_a_database_query(
    stats_bucket, minute, django_assert_num_queries
):
    store([payload("alice", "Austin", "TX", minute)])
    publish.stats_publish(now=minute)

    with django_assert_num_queries(0):
        response = Client().get("/stat/get/")

    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}" == django_settings.S3_PUBLIC_ENDPOINT_URL
    assert location.path == f"/{stats_bucket}/{django_settings.STATS_BLOB_KEY}"
    query = parse_qs(location.query)
    assert query["X-Amz-Expires"] == ["300"]
    assert set(query) >= {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Signature"}
    blob = requests.get(response["Location"], timeout=5).json()
    assert blob["totals"]["messages"] == 1
    assert queued_publish_tasks() == []


def test_the_presigned_url_expiry_is_a_setting(stats_bucket, minute, settings):
    settings.STATS_URL_EXPIRY_SECONDS = 45
    publish.stats_publish(now=minute)

    response = Client().get("/stat/get/")

    assert parse_qs(urlsplit(response["Location"]).query)["X-Amz-Expires"] == ["45"]


def test_it_answers_503_in_json_when_redis_is_unreachable(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client_reset()
    try:
        response = Client().get("/stat/get/")
    finally:
        redis_client_reset()

    assert response.status_code == 503
    assert response.json()["error"] == "stats_unavailable"
    assert "Retry-After" in response


def test_it_refuses_a_post_in_the_shared_error_shape():
    response = Client().post("/stat/get/")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_it_signs_only_the_blob_key_of_the_settings_whatever_the_marker_in_redis_names(stats_bucket, minute):
    publish.stats_publish(now=minute)
    # A Redis writer points the marker at an import upload.
    marker = {"generated_at": "2026-11-25T12:34:00.000Z", "key": "imports/someone-s-upload.csv"}
    redis_client().set(published_marker_key(), json.dumps(marker))

    response = Client().get("/stat/get/")

    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == f"/{stats_bucket}/{django_settings.STATS_BLOB_KEY}"
