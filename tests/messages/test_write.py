import json

import pytest
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.db import connection

from messages import staging

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def client() -> Client:
    return Client()


def post_json(client: Client, path: str, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_it_accepts_a_json_message_with_202_and_an_id(client):
    response = post_json(client, "/message/write/", GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert len(body["id"]) == 36
    assert staging.backlog() == 1
