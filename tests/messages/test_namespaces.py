"""Each client's Idempotency-Keys and own message ids are its own: scoped to its write API key,
or to its address when keys are off. Another address can neither pre-claim them, read what was
answered under them, nor suppress the first client's messages (docs/fairness.md). An own id sent
again with other content is 409, not silently dropped."""

import json
from typing import Any

import pytest
from django.test import Client

from messages import services, staging
from messages.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}
OWN_ID = "0192d6c0-1a2b-7c3d-8e4f-0123456789ab"  # a UUIDv7 a client chose


def client_at(address: str, **headers: Any) -> Client:
    return Client(REMOTE_ADDR=address, **headers)


def post(client: Client, path: str, body, **headers: str):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def write(client: Client, body=None, **headers: str):
    return post(client, "/message/write/", body or GOOD, **headers)


FIRST, SECOND = "192.0.2.1", "198.51.100.7"


# --- Idempotency-Keys ----------------------------------------------------------------------------


def test_another_address_cannot_pre_claim_an_idempotency_key():
    squatter = write(client_at(SECOND), {**GOOD, "message": "squatted"}, **{"Idempotency-Key": "order-42"})
    assert squatter.status_code == 202
    first = write(client_at(FIRST), **{"Idempotency-Key": "order-42"})
    assert first.status_code == 202  # not 422: the key is this client's own
    assert "replayed" not in first.json()
    again = write(client_at(FIRST), **{"Idempotency-Key": "order-42"})
    assert again.json() == {**first.json(), "replayed": True}


def test_another_address_cannot_read_the_answer_given_under_a_key():
    first = write(client_at(FIRST), **{"Idempotency-Key": "order-43"}).json()
    # The same request from elsewhere is a new request, not a replay of the first one's ids.
    other = write(client_at(SECOND), **{"Idempotency-Key": "order-43"}).json()
    assert "replayed" not in other
    assert other["id"] != first["id"]
    assert staging.backlog() == 2


def test_an_unchecked_api_key_sent_while_keys_are_off_does_not_open_another_address_s_keys():
    write(client_at(FIRST, HTTP_X_API_KEY="guessable"), **{"Idempotency-Key": "k"})
    other = write(client_at(SECOND, HTTP_X_API_KEY="guessable"), **{"Idempotency-Key": "k"}).json()
    assert "replayed" not in other


# --- the client's own message ids ------------------------------------------------------------


def test_another_address_can_neither_pre_claim_read_nor_suppress_an_own_message_id():
    squatter = write(client_at(SECOND), {**GOOD, "id": OWN_ID, "message": "claimed?"})
    assert squatter.status_code == 202
    first = write(client_at(FIRST), {**GOOD, "id": OWN_ID})
    assert first.status_code == 202  # not suppressed, and not 409 on the other's content
    assert first.json()["id"] != squatter.json()["id"]

    services.messages_drain(staging.shards()[0], slot=0)

    assert Message.objects.get(pk=first.json()["id"]).message == "hello"
    assert Message.objects.get(pk=squatter.json()["id"]).message == "claimed?"
    # Knowing the id the first client chose reads nothing: Messy's id is derived from its scope.
    assert client_at(SECOND).get(f"/message/{OWN_ID}/").status_code == 404


def test_an_own_id_sent_again_with_the_same_content_is_the_same_message():
    first = write(client_at(FIRST), {**GOOD, "id": OWN_ID}).json()["id"]
    again = write(client_at(FIRST), {**GOOD, "id": OWN_ID})
    assert (again.status_code, again.json()["id"]) == (202, first)
    in_batch = post(client_at(FIRST), "/message/batch/", [{**GOOD, "id": OWN_ID}])
    assert in_batch.json()["results"][0]["id"] == first
    services.messages_drain(staging.shards()[0], slot=0)
    assert Message.objects.count() == 1


def test_an_own_id_sent_again_with_other_content_is_409_naming_it():
    write(client_at(FIRST), {**GOOD, "id": OWN_ID})
    conflict = write(client_at(FIRST), {**GOOD, "id": OWN_ID, "message": "edited"})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "message_id_conflict"
    assert list(conflict.json()["fields"]) == ["id"]
    batch = post(
        client_at(FIRST), "/message/batch/", [{"username": "bad"}, GOOD, {**GOOD, "id": OWN_ID, "city": "Paris"}]
    )
    assert batch.status_code == 409
    assert list(batch.json()["fields"]) == ["2"]  # its index in the batch
    assert staging.backlog() == 1  # nothing of a refused request was staged


def test_with_write_keys_the_scope_is_the_key_whatever_the_address(settings):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["key-a"]
    first = write(client_at(FIRST, HTTP_X_API_KEY="key-a"), {**GOOD, "id": OWN_ID}, **{"Idempotency-Key": "k"})
    moved = write(client_at(SECOND, HTTP_X_API_KEY="key-a"), {**GOOD, "id": OWN_ID}, **{"Idempotency-Key": "k"})
    assert moved.json() == {**first.json(), "replayed": True}
