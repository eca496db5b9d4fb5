"""Idempotency records (an Idempotency-Key's, an own message id's) are bounded per client and in
total: past a budget a request that would make a new one is refused, never a plain write, and a
retry of a remembered key is still answered (docs/fairness.md)."""

import json
import time
import uuid

import pytest
from django.test import Client

from messages import staging

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def client_at(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def write(client: Client, body=None, **headers: str):
    return client.post(
        "/message/write/", data=json.dumps(body or GOOD), content_type="application/json", headers=headers
    )


def keyed(client: Client, key: str):
    return write(client, **{"Idempotency-Key": key})


def test_records_live_an_hour_by_default(settings):
    assert settings.MESSY_IDEMPOTENCY_TTL <= 3600
    keyed(client_at("192.0.2.1"), "k")
    assert 3590 < staging.redis_client().ttl(staging.idempotency_key(staging.shards()[0], "192.0.2.1", "k")) <= 3600


def test_past_its_budget_a_client_s_new_keys_get_429_and_its_plain_writes_still_pass(settings):
    settings.MESSY_IDEMPOTENCY_CLIENT_BYTES = 3000  # about ten records
    flooder = client_at("192.0.2.1")
    answers = [keyed(flooder, f"flood-{i}") for i in range(40)]
    accepted = [a for a in answers if a.status_code == 202]
    assert 5 <= len(accepted) <= 15
    refused = answers[-1]
    assert refused.status_code == 429
    assert refused.json()["error"] == "idempotency_quota_exceeded"
    assert 0 < int(refused["Retry-After"]) <= settings.MESSY_IDEMPOTENCY_TTL
    assert write(flooder).status_code == 202  # no key, no record: not refused
    assert keyed(flooder, "flood-0").json()["replayed"] is True  # a remembered key is still answered
    assert keyed(client_at("192.0.2.2"), "flood-0").status_code == 202  # others have their own budget
    assert staging.backlog() == len(accepted) + 2


def test_own_message_ids_are_charged_to_the_same_budget(settings):
    settings.MESSY_IDEMPOTENCY_CLIENT_BYTES = 3000
    flooder = client_at("192.0.2.1")
    answers = [write(flooder, {**GOOD, "id": str(uuid.uuid4())}).status_code for _ in range(40)]
    assert answers[0] == 202 and answers[-1] == 429
    assert write(flooder).status_code == 202


def test_past_the_total_budget_new_keys_get_503_and_plain_writes_still_pass(settings):
    settings.MESSY_IDEMPOTENCY_MAX_BYTES = 3000
    answers = [keyed(client_at(f"192.0.2.{i}"), "order-1") for i in range(1, 40)]
    assert answers[0].status_code == 202
    refused = answers[-1]
    assert refused.status_code == 503
    assert refused.json()["error"] == "idempotency_full"
    assert refused["Retry-After"]
    assert write(client_at("192.0.2.200")).status_code == 202


def test_a_spent_budget_renews_once_its_records_have_expired(settings):
    settings.MESSY_IDEMPOTENCY_CLIENT_BYTES = 3000
    settings.MESSY_IDEMPOTENCY_TTL = 1
    flooder = client_at("192.0.2.1")
    statuses = [keyed(flooder, f"k-{i}").status_code for i in range(30)]
    assert statuses[-1] == 429
    time.sleep(1.2)
    assert keyed(flooder, "after").status_code == 202
