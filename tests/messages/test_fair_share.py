"""One client cannot fill the shared backlog: each may hold MESSY_BACKLOG_CLIENT_SHARE of it
(entries and bytes); past that its writes get 429 while other clients' are still accepted, and
once its messages are stored it may write again (docs/fairness.md)."""

import json

import pytest
from django.test import Client

from messages import services, staging

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def small_backlog(settings):
    """A backlog of 100 messages with the default share: 10 per client. Quotas off, so only the
    share refuses."""
    settings.MESSY_BACKLOG_MAX = 100
    settings.MESSY_QUOTA_RATE = 0


def client_at(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def write(client: Client, **fields: str):
    return client.post("/message/write/", data=json.dumps({**GOOD, **fields}), content_type="application/json")


def batch(client: Client, size: int):
    return client.post("/message/batch/", data=json.dumps([GOOD] * size), content_type="application/json")


def test_the_default_share_leaves_most_of_the_backlog_to_other_clients(settings):
    assert 0 < settings.MESSY_BACKLOG_CLIENT_SHARE <= 0.1
    # The quota's burst is no larger than the share: a client's burst alone never fills more.
    assert settings.MESSY_QUOTA_BURST <= settings.MESSY_BACKLOG_MAX * settings.MESSY_BACKLOG_CLIENT_SHARE


def test_a_client_at_full_speed_stops_at_its_share_and_another_is_still_accepted(small_backlog):
    heavy, other = client_at("192.0.2.1"), client_at("192.0.2.2")
    answers = [write(heavy) for _ in range(30)]
    assert [a.status_code for a in answers] == [202] * 10 + [429] * 20
    refused = answers[-1]
    assert refused.json()["error"] == "backlog_share_exceeded"
    assert refused["Retry-After"]
    assert [write(other).status_code for _ in range(10)] == [202] * 10
    assert staging.backlog() == 20


def test_a_batch_counts_each_of_its_messages(small_backlog):
    heavy, other = client_at("192.0.2.1"), client_at("192.0.2.2")
    assert batch(heavy, 8).status_code == 202
    assert batch(heavy, 3).json()["error"] == "backlog_share_exceeded"
    assert batch(heavy, 2).status_code == 202
    assert batch(other, 10).status_code == 202


def test_the_share_counts_bytes_too(small_backlog, settings):
    settings.MESSY_BACKLOG_MAX_BYTES = 200_000  # a share of 20 kB
    heavy, other = client_at("192.0.2.1"), client_at("192.0.2.2")
    big = "x" * 3800  # about 3.9 kB staged: five fit
    answers = [write(heavy, message=big).status_code for _ in range(8)]
    assert answers == [202] * 5 + [429] * 3
    assert write(other, message=big).status_code == 202


def test_once_its_messages_are_stored_the_client_may_write_again(small_backlog):
    heavy, other = client_at("192.0.2.1"), client_at("192.0.2.2")
    assert [write(heavy).status_code for _ in range(11)] == [202] * 10 + [429]
    services.messages_drain(staging.shards()[0], slot=0)
    assert write(other).status_code == 202  # the backlog is not empty: the client's count is read
    assert [write(heavy).status_code for _ in range(11)] == [202] * 10 + [429]
    assert staging.backlog() == 11


def test_a_client_writing_steadily_while_drains_keep_up_is_never_refused(small_backlog):
    heavy, other = client_at("192.0.2.1"), client_at("192.0.2.2")
    for _ in range(6):
        assert write(other).status_code == 202
        assert [write(heavy).status_code for _ in range(7)] == [202] * 7
        services.messages_drain(staging.shards()[0], slot=0)


def test_with_write_keys_the_share_is_the_key_s_whatever_the_address(small_backlog, settings):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["key-a", "key-b"]
    first = Client(REMOTE_ADDR="192.0.2.1", HTTP_X_API_KEY="key-a")
    moved = Client(REMOTE_ADDR="192.0.2.9", HTTP_X_API_KEY="key-a")
    assert [write(first).status_code for _ in range(10)] == [202] * 10
    assert write(moved).status_code == 429
    assert write(Client(REMOTE_ADDR="192.0.2.1", HTTP_X_API_KEY="key-b")).status_code == 202
