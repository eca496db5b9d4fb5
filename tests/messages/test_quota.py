"""Per-client quotas: a token bucket per write API key (per client address when keys are off),
spent in the staging script, one token per accepted message."""

import json
import time

import pytest
from django.test import Client

from messages import services, staging
from messages.clients import api_key_digest
from project.redis import redis_client
from tests.clock import StoppedClock

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def write(client: Client, **headers: str):
    return client.post("/message/write/", data=json.dumps(GOOD), content_type="application/json", headers=headers)


def batch(client: Client, items: list, **headers: str):
    return client.post("/message/batch/", data=json.dumps(items), content_type="application/json", headers=headers)


@pytest.fixture
def quota(settings):
    def set_quota(rate: float, burst: int, overrides: list[str] | None = None) -> None:
        settings.MESSY_QUOTA_RATE = rate
        settings.MESSY_QUOTA_BURST = burst
        settings.MESSY_QUOTA_OVERRIDES = overrides or []

    return set_quota


def test_over_quota_a_write_gets_429_with_retry_after_and_ratelimit_headers(quota, write_client):
    quota(rate=0.5, burst=2)
    client = write_client()
    first = write(client)
    assert first.status_code == 202
    assert (first["RateLimit-Limit"], first["RateLimit-Remaining"]) == ("2", "1")
    assert int(first["RateLimit-Reset"]) >= 1
    assert write(client).status_code == 202

    refused = write(client)

    assert refused.status_code == 429
    assert refused.json()["error"] == "quota_exceeded"
    assert set(refused.json()) == {"error", "message"}
    assert refused["Retry-After"] == refused["RateLimit-Reset"]
    assert 1 <= int(refused["Retry-After"]) <= 2
    assert (refused["RateLimit-Limit"], refused["RateLimit-Remaining"]) == ("2", "0")
    assert staging.backlog() == 2


def test_the_bucket_refills_over_time(quota, write_client, monkeypatch):
    quota(rate=20, burst=2)
    # The write path's clock, stopped: on a running one, a slow moment between two writes
    # would refill a token.
    clock = StoppedClock()
    monkeypatch.setattr(services.accept, "time", clock)
    client = write_client()
    assert [write(client).status_code for _ in range(3)] == [202, 202, 429]
    clock.advance(0.049)  # less than a token's worth (one each 50 ms)
    assert write(client).status_code == 429
    clock.advance(0.071)  # 120 ms in all: 2.4 tokens' worth, capped at the burst of 2
    assert [write(client).status_code for _ in range(3)] == [202, 202, 429]


def test_a_web_host_whose_clock_is_behind_refills_nothing_until_it_passes_the_stamp():
    """The bucket runs on the web hosts' clocks (the request's millisecond): a host behind the
    one that wrote last must not count the difference as time passed, nor move the stamp back."""
    now_ms = int(time.time() * 1000)
    payload = json.dumps({**GOOD, "id": "x", "accepted_at": now_ms})

    def stage(at_ms: int) -> staging.StageOutcome:
        return staging.stage(
            [payload], at_ms, shard=staging.shard_of("skewed"), quota_subject="skewed", quota_rate=10, quota_burst=2
        )

    assert [stage(now_ms).result, stage(now_ms).result] == ["staged", "staged"]  # the burst, spent
    assert stage(now_ms - 5_000).result == "quota"  # 5 s behind: not 50 tokens' worth of refill
    assert stage(now_ms + 200).result == "staged"  # 200 ms on: two tokens, one spent
    assert stage(now_ms - 5_000).result == "staged"  # the last token, spent by the host behind...
    # ...which kept the stamp at +200 ms: 100 ms later holds one token, not a full bucket.
    assert [stage(now_ms + 300).result, stage(now_ms + 300).result] == ["staged", "quota"]


def test_a_batch_spends_one_token_per_accepted_message(quota, write_client):
    quota(rate=0.01, burst=5)
    client = write_client()
    response = batch(client, [GOOD, {"username": "rejected"}, GOOD, GOOD])
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    assert response["RateLimit-Remaining"] == "2"

    refused = batch(client, [GOOD, GOOD, GOOD])
    assert refused.status_code == 429
    assert refused["RateLimit-Remaining"] == "2"
    assert staging.backlog() == 3  # nothing of the refused batch, and no token spent by it
    assert batch(client, [GOOD, GOOD]).status_code == 202


def test_a_batch_larger_than_the_burst_is_refused_and_told_to_split(quota, write_client):
    quota(rate=1, burst=2)
    refused = batch(write_client(), [GOOD, GOOD, GOOD])
    assert refused.status_code == 429
    assert "smaller batches" in refused.json()["message"]
    assert staging.backlog() == 0


def test_rate_0_turns_quotas_off(quota, write_client, settings):
    quota(rate=0, burst=1)
    settings.MESSY_BACKLOG_CLIENT_SHARE = 0  # the client's share of the backlog lives in the same key
    client = write_client()
    responses = [write(client) for _ in range(3)]
    assert [r.status_code for r in responses] == [202, 202, 202]
    assert "RateLimit-Limit" not in responses[0]
    assert not list(redis_client().scan_iter(staging.quota_key("*")))


def test_with_keys_each_key_has_its_bucket_and_an_override_by_digest_or_key(quota, settings, write_client):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["key-small", "key-other", "key-big"]
    quota(rate=0.01, burst=2, overrides=[f"{api_key_digest('key-small')}=0.01:1", "key-big=0.01:3"])
    client = write_client()
    assert [write(client, **{"X-API-Key": "key-small"}).status_code for _ in range(2)] == [202, 429]
    assert [write(client, **{"X-API-Key": "key-other"}).status_code for _ in range(3)] == [202, 202, 429]
    assert [write(client, Authorization="Bearer key-big").status_code for _ in range(4)] == [202, 202, 202, 429]


def test_without_keys_the_bucket_is_the_client_address_forwarded_by_the_front_door(quota, write_client):
    quota(rate=0.01, burst=1)
    # The test client's REMOTE_ADDR is 127.0.0.1, a trusted proxy: its X-Forwarded-For counts.
    assert write(write_client(), **{"X-Forwarded-For": "203.0.113.1"}).status_code == 202
    assert write(write_client(), **{"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    assert write(write_client(), **{"X-Forwarded-For": "203.0.113.2"}).status_code == 202
    # From an untrusted address the header is the client's own claim: ignored.
    direct = Client(REMOTE_ADDR="198.51.100.9")
    assert write(direct, **{"X-Forwarded-For": "203.0.113.3"}).status_code == 202
    assert write(direct, **{"X-Forwarded-For": "203.0.113.4"}).status_code == 429
    assert redis_client().exists(staging.quota_key("198.51.100.9"))


def test_without_keys_ipv6_clients_are_charged_by_their_64(quota, write_client):
    quota(rate=0.01, burst=1)
    # A client holding a /64 could otherwise take a fresh address, and a fresh bucket, per request.
    assert write(write_client(), **{"X-Forwarded-For": "2001:db8:1:2::1"}).status_code == 202
    assert write(write_client(), **{"X-Forwarded-For": "2001:db8:1:2:ffff::9"}).status_code == 429
    assert write(write_client(), **{"X-Forwarded-For": "2001:db8:1:3::1"}).status_code == 202


def test_redis_key_names_hold_api_keys_only_as_digests(settings, write_client):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["plain-secret-key-1234"]
    client = write_client()
    response = write(client, **{"X-API-Key": "plain-secret-key-1234", "Idempotency-Key": "idem-1"})
    assert response.status_code == 202
    body = {**GOOD, "id": "0192d6c0-0000-7000-8000-000000000001"}
    assert batch(client, [body], Authorization="Bearer plain-secret-key-1234").status_code == 202

    names = [name.decode() for name in redis_client().scan_iter("*")]
    assert not [name for name in names if "plain-secret-key" in name]
    digest = api_key_digest("plain-secret-key-1234")
    assert staging.quota_key(digest) in names
    assert staging.idempotency_key(staging.shard_of(digest), digest, "idem-1") in names


def test_a_wrong_key_is_refused_whatever_its_length_or_prefix(settings, write_client):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["right-key"]
    for wrong in ("right-ke", "right-key ", "right-keyx", "x" * 300):
        assert write(write_client(), **{"X-API-Key": wrong}).status_code == 403
    assert write(write_client(), **{"X-API-Key": "right-key"}).status_code == 202
