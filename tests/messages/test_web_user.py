"""The write path as the web tier's Redis user (messy-web): every branch of the stage script and
the status read run with only the commands scripts/redis-users.sh gives that user. The other
tests connect as the workers' user, which may run almost anything."""

import json
import uuid

import pytest
from django.test import Client

from project.redis import redis_client_reset
from tests.harness import redis_user_url

pytestmark = pytest.mark.django_db

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def as_web_user(settings):
    settings.REDIS_URL = redis_user_url(settings.REDIS_URL, "web")
    redis_client_reset()
    yield
    redis_client_reset()


def post(client: Client, path: str, body: object, **headers: str):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_the_web_user_may_run_every_branch_of_a_write_and_a_status_read(as_web_user):
    client = Client()
    assert post(client, "/message/write/", GOOD).status_code == 202
    keyed = post(client, "/message/write/", GOOD, **{"Idempotency-Key": "web-user-1"})
    assert keyed.status_code == 202, keyed.content
    replayed = post(client, "/message/write/", GOOD, **{"Idempotency-Key": "web-user-1"})
    assert replayed.json() == {**keyed.json(), "replayed": True}
    own = str(uuid.uuid4())
    assert post(client, "/message/write/", {**GOOD, "id": own}).status_code == 202
    batch = post(client, "/message/batch/", [{**GOOD, "id": str(uuid.uuid4())} for _ in range(50)])
    assert batch.status_code == 202, batch.content
    assert post(client, "/message/write/", {**GOOD, "id": own, "message": "other"}).status_code == 409
    status = client.get(f"/message/{keyed.json()['id']}/")
    assert status.status_code == 200 and status.json()["status"] == "pending"
