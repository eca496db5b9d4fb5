"""Staging split into stream shards (MESSY_STAGING_SHARDS) on one Redis: routing by client, one
hash slot per request, and drains, sweeps, status reads, erasure and figures over every shard."""

import base64
import json
import zlib

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import Client
from redis.crc import key_slot

from messages import copies, services, staging
from messages.models import Message
from messages.validation import MessageInput
from stats.selectors import rollups_differences

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def three_shards(settings):
    settings.MESSY_STAGING_SHARDS = 3
    return staging.shards()


def write_from(address: str, body: dict | None = None, headers: dict[str, str] | None = None):
    client = Client(REMOTE_ADDR=address)
    return client.post(
        "/message/write/", data=json.dumps(body or GOOD), content_type="application/json", headers=headers or {}
    )


def shard_lengths() -> list[int]:
    return [int(staging.redis_client().xlen(shard.stream)) for shard in staging.shards()]


def queued_drains() -> list[list]:
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    bodies = [json.loads(raw) for raw in broker.lrange("ingest", 0, -1)]
    return [json.loads(base64.b64decode(b["body"]))[0] for b in bodies if b["headers"]["task"] == "messages.drain"]


def addresses(count: int) -> list[str]:
    return [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 8])
def test_shard_tags_lie_in_equal_parts_of_the_slot_space(count):
    tags = [staging.shard_tag(i, count) for i in range(count)]
    assert len(set(tags)) == count
    for index, tag in enumerate(tags):
        assert index * 16384 // count <= key_slot(tag.encode()) < (index + 1) * 16384 // count


def test_one_shard_is_the_default_and_takes_every_client():
    assert len(staging.shards()) == 1
    assert staging.shards()[0].stream == f"{django_settings.REDIS_KEY_PREFIX}:{{s0}}:stream"
    assert {staging.shard_of(a).index for a in addresses(50)} == {0}


def test_the_keys_one_write_touches_share_its_shard_s_hash_slot(three_shards):
    for subject in addresses(30):
        shard = staging.shard_of(subject)
        names = [
            shard.stream,
            shard.slot(0),
            shard.metrics,
            staging.quota_key(subject),
            staging.idempotency_key(shard, "anon", "order-42"),
        ]
        assert len({key_slot(name.encode()) for name in names}) == 1, names


def test_a_client_always_reaches_the_same_shard_and_clients_spread_over_all(three_shards):
    assert staging.shard_of("10.9.9.9").index == zlib.crc32(b"10.9.9.9") % 3  # the same on every host
    spread = [staging.shard_of(a).index for a in addresses(300)]
    assert all(spread.count(shard) > 60 for shard in range(3))


def test_writes_land_in_their_client_s_shard_and_every_shard_drains_exactly_once(three_shards):
    accepted = []
    for address in addresses(30):
        response = write_from(address)
        assert response.status_code == 202
        accepted.append(response.json()["id"])
    lengths = shard_lengths()
    assert sum(lengths) == 30 and all(lengths)
    expected = [sum(staging.shard_of(a).index == s for a in addresses(30)) for s in range(3)]
    assert lengths == expected
    assert staging.backlog() == 30
    assert staging.accepted_total() == 30
    # The first write to each shard took that shard's slot 0 and published its drain.
    assert sorted(queued_drains()) == [[0, 0], [0, 1], [0, 2]]

    stored = sum(services.messages_drain(shard, 0).stored for shard in staging.shards())

    assert stored == 30
    assert sorted(map(str, Message.objects.values_list("id", flat=True))) == sorted(accepted)
    assert staging.backlog() == 0
    assert staging.metrics_snapshot()["stored"] == 30
    assert rollups_differences() == []


def test_the_sweep_starts_a_drain_on_every_shard_with_a_backlog_and_only_there(three_shards):
    writers = addresses(30)
    busy = next(a for a in writers if staging.shard_of(a).index == 2)
    assert write_from(busy).status_code == 202
    staging.slot_release(staging.shards()[2], 0)  # as if that drain task had been lost
    before = len(queued_drains())

    assert services.messages_sweep() is True

    assert queued_drains()[before:] == [[0, 2]]
    assert services.messages_sweep() is False  # its slot is taken now


def test_a_drain_fans_out_on_its_own_shard(three_shards, settings):
    settings.MESSY_DRAIN_BATCH_SIZE = 5
    settings.MESSY_DRAIN_RUN_SECONDS = 0.0001
    staging.worker_heartbeat("host-a:1", 2)
    subject = next(a for a in addresses(30) if staging.shard_of(a).index == 1)
    inputs = [MessageInput("u", "c", "s", f"m{i}") for i in range(40)]
    services.messages_accept(services.WriteRequest(inputs, quota_subject=subject))
    before = len(queued_drains())

    services.messages_drain(staging.shards()[1], 0)

    assert queued_drains()[before:] == [[1, 1], [0, 1]]  # a helper on slot 1, then the hand-over
    assert staging.redis_client().exists(staging.shards()[1].slot(1))
    assert not staging.redis_client().exists(staging.shards()[0].slot(1))


def test_an_idempotency_key_is_kept_in_its_shard_and_replayed_from_it(three_shards):
    address = next(a for a in addresses(30) if staging.shard_of(a).index == 2)
    first = write_from(address, headers={"Idempotency-Key": "order-7"})
    again = write_from(address, headers={"Idempotency-Key": "order-7"})
    assert first.status_code == again.status_code == 202
    assert again.json() == {**first.json(), "replayed": True}
    assert shard_lengths() == [0, 0, 1]
    assert staging.redis_client().exists(staging.idempotency_key(staging.shards()[2], address, "order-7"))


def test_the_quota_is_exact_with_several_shards(three_shards, settings):
    settings.MESSY_QUOTA_RATE = 0.5
    settings.MESSY_QUOTA_BURST = 2
    assert [write_from("10.7.7.7").status_code for _ in range(3)] == [202, 202, 429]
    assert staging.redis_client().exists(staging.quota_key("10.7.7.7"))


def test_a_staged_message_reads_pending_from_any_shard_without_its_memcached_copy(three_shards):
    for address in addresses(9):
        message_id = write_from(address).json()["id"]
        caches["staged"].delete(copies.copy_key(message_id))
        assert Client().get(f"/message/{message_id}/").json()["status"] == "pending"


def test_an_erasure_removes_the_user_s_entries_from_every_shard(three_shards):
    for address in addresses(12):
        assert write_from(address, {**GOOD, "username": "eve"}).status_code == 202
        assert write_from(address, {**GOOD, "username": "bob"}).status_code == 202
    staging.group_ensure(staging.shards()[1])
    held = staging.batch_claim(staging.shards()[1], "a-drain", 100)  # read, not yet stored

    in_flight = services.messages_erase_staged("eve", lambda: None)

    assert len(in_flight) == 12 and {shard for shard, _ in in_flight} == {0, 1, 2}
    assert staging.backlog() == 12
    for shard in staging.shards():
        names = {json.loads(f[b"m"])["username"] for _, f in staging.redis_client().xrange(shard.stream)}
        assert names <= {"bob"}
    eve_held = {(1, e.entry_id) for e in held if json.loads(e.payload)["username"] == "eve"}
    assert eve_held and set(in_flight) >= eve_held
    staging.batch_ack(staging.shards()[1], [e.entry_id for e in held], 0, 0)
    assert services.messages_erase_wait(in_flight, lambda: None)


def test_a_dead_letter_from_any_shard_goes_to_the_one_dead_letter_stream(three_shards):
    shard = staging.shards()[2]
    staging.group_ensure(shard)
    staging.redis_client().xadd(shard.stream, {"m": b"{not json"})
    message_id = write_from(next(a for a in addresses(30) if staging.shard_of(a) == shard)).json()["id"]
    services.messages_drain(shard, 0)
    [letter] = staging.dead_letters_page()
    assert letter.payload == b"{not json"
    assert Message.objects.filter(pk=message_id).exists()
    assert staging.metrics_snapshot()["dead_lettered"] == 1
