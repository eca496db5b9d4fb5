"""GET /message/<id>/: pending while staged, stored once a worker stored it, 404 otherwise."""

import json
import uuid

import pytest
from django.core.cache import caches
from django.test import Client

from messages import copies, ids, services, staging

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
    services.messages_drain(staging.shards()[0], slot=0)
    body = client.get(f"/message/{message_id}/").json()
    assert body["status"] == "stored"
    assert {k: body[k] for k in GOOD} == GOOD
    assert body["id"] == message_id


def test_the_memcached_copy_is_a_marker_holding_no_message_content():
    message_id = write(Client())
    assert caches["staged"].get(copies.copy_key(message_id)) == copies.MARKER


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


def test_a_staged_message_whose_copy_is_gone_reads_as_pending_from_the_stream():
    """Issue 8, item 7: memcached evicted or restarted while the message waits to be stored."""
    client = Client()
    message_id = write(client)
    caches["staged"].clear()
    assert client.get(f"/message/{message_id}/").json() == {"status": "pending", "id": message_id}
    assert client.get(f"/message/{uuid.uuid4()}/").status_code == 404
    assert client.get(f"/message/{ids.message_id_new()}/").status_code == 404  # a fresh UUIDv7
    services.messages_drain(staging.shards()[0], slot=0)
    assert client.get(f"/message/{message_id}/").json()["status"] == "stored"


def test_a_message_staged_after_an_entry_from_a_host_whose_clock_is_ahead_is_still_found(settings):
    settings.MESSY_CLOCK_SKEW_MS = 5000
    client = Client()
    ahead_ms = ids.message_id_ms(ids.message_id_new()) + 2000
    staging.redis_client().execute_command("XADD", staging.shards()[0].stream, f"{ahead_ms}-0", "m", b"{}")
    message_id = write(client)  # its entry cannot take its own millisecond: it follows the other
    caches["staged"].delete(copies.copy_key(message_id))
    assert client.get(f"/message/{message_id}/").json()["status"] == "pending"


def test_a_message_deep_in_a_backlog_of_its_own_millisecond_is_found_page_by_page(settings):
    settings.MESSY_BATCH_MAX_ITEMS = 1200  # more than a page (staging.FIND_PAGE) in one millisecond
    client = Client()
    batch = [dict(GOOD, username=f"u{i}") for i in range(1200)]
    response = client.post("/message/batch/", data=json.dumps(batch), content_type="application/json")
    last_id = response.json()["results"][-1]["id"]
    caches["staged"].clear()
    assert client.get(f"/message/{last_id}/").json()["status"] == "pending"
