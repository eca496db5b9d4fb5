"""GET /message/<id>/: pending while staged, stored once a worker stored it, 404 otherwise."""

import json
import uuid

import pytest
from django.core.cache import caches
from django.test import Client

from messages import ids, services, staging

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def write(client: Client) -> str:
    response = client.post("/message/write/", data=json.dumps(GOOD), content_type="application/json")
    assert response.status_code == 202
    return response.json()["id"]


def test_a_staged_message_reads_as_pending_then_as_stored_with_its_fields():
    client = Client()
    message_id = write(client)
    assert client.get(f"/message/{message_id}/").json() == {"status": "pending", "id": message_id}
    services.messages_drain(slot=0)
    body = client.get(f"/message/{message_id}/").json()
    assert body["status"] == "stored"
    assert {k: body[k] for k in GOOD} == GOOD
    assert body["id"] == message_id


def test_the_memcached_copy_is_written_when_a_message_is_accepted():
    message_id = write(Client())
    copy = json.loads(caches["staged"].get(staging.copy_key(message_id)))
    assert copy["id"] == message_id
    assert copy["message"] == "hello"


def test_an_unknown_id_is_404_in_json():
    response = Client().get(f"/message/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert response.json()["error"] == "message_not_found"


def test_a_malformed_id_is_404_in_json():
    response = Client().get("/message/not-a-uuid/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_message_ids_are_time_ordered_uuid7():
    first, second = ids.message_id_new(), ids.message_id_new()
    assert first.version == 7
    assert first.int >> 80 <= second.int >> 80
