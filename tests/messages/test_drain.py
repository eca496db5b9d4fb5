"""Draining the staging stream into PostgreSQL: exactly once, whatever is replayed or crashes."""

import json

import pytest
import redis
from django.conf import settings
from django.db import InternalError, connection
from django.test import Client

from messages import ids, services, staging
from messages.models import Message
from messages.staged import StagedPayload
from stats.models import CityCount, MinuteCount, StateCount, Totals, UserCount

pytestmark = pytest.mark.django_db(transaction=True)


def write_many(count: int, users: int = 3) -> list[str]:
    client = Client()
    ids = []
    for i in range(count):
        body = {"username": f"u{i % users}", "city": "Paris", "state": "IDF", "message": f"m{i}"}
        response = client.post("/message/write/", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 202
        ids.append(response.json()["id"])
    return ids


def totals() -> tuple[int, int, int, int]:
    row = Totals.objects.get()
    return row.messages, row.users, row.cities, row.states


def broker_queue_length(queue: str = "ingest") -> int:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(queue)


def test_a_drain_stores_every_staged_message_once_with_rollups():
    ids = write_many(30)
    report = services.messages_drain(staging.shards()[0], slot=0)
    assert report.stored == 30
    assert set(map(str, Message.objects.values_list("id", flat=True))) == set(ids)
    assert staging.backlog() == 0
    assert totals() == (30, 3, 1, 1)
    assert StateCount.objects.get(state="IDF").messages == 30
    assert CityCount.objects.get(state="IDF", city="Paris").messages == 30
    assert UserCount.objects.get(username="u0").messages == 10
    assert sum(MinuteCount.objects.values_list("messages", flat=True)) == 30


def test_persisting_the_same_payloads_twice_changes_nothing_the_second_time():
    payloads: list[StagedPayload] = [
        {
            "id": ids.message_id_text(),
            "username": "a",
            "city": "c",
            "state": "s",
            "message": "m",
            "accepted_at": 1_700_000_000_000,
        }
        for _ in range(5)
    ]
    assert services.messages_persist(payloads) == 5
    assert services.messages_persist(payloads) == 0
    assert Message.objects.count() == 5
    assert totals() == (5, 1, 1, 1)


def test_a_batch_holding_stored_ids_and_one_id_twice_stores_and_counts_only_the_new_ones():
    """A plain INSERT stores a batch of new ids; a duplicate id (stored before, or twice in the
    batch) sends the batch through ON CONFLICT DO NOTHING, counting only what it inserted."""

    def payload(username: str) -> StagedPayload:
        return {
            "id": ids.message_id_text(),
            "username": username,
            "city": "c",
            "state": "s",
            "message": "m",
            "accepted_at": 1_700_000_000_000,
        }

    stored = [payload("a") for _ in range(3)]
    assert services.messages_persist(stored) == 3
    twice = payload("b")
    assert services.messages_persist([*stored, twice, payload("c"), twice]) == 2
    assert Message.objects.count() == 5
    assert totals() == (5, 3, 1, 1)
    assert UserCount.objects.get(username="b").messages == 1


def test_a_batch_stored_but_not_acknowledged_before_a_crash_is_not_stored_twice(settings):
    """The worker died between COMMIT and XACK: the entries are still pending, get reclaimed,
    and the second insert is a no-op, rollups included."""
    settings.MESSY_DRAIN_RECLAIM_IDLE_MS = 0
    write_many(20)
    staging.group_ensure(staging.shards()[0])
    entries = staging.batch_claim(staging.shards()[0], "doomed-worker", 100)
    services.messages_persist([json.loads(entry.payload) for entry in entries])  # ...and then it died
    report = services.messages_drain(staging.shards()[0], slot=0)
    assert report.entries == 20
    assert report.stored == 0
    assert Message.objects.count() == 20
    assert totals() == (20, 3, 1, 1)
    assert staging.backlog() == 0


def test_entries_held_by_a_dead_consumer_wait_for_the_idle_time_then_are_reclaimed(settings):
    write_many(10)
    staging.group_ensure(staging.shards()[0])
    assert len(staging.batch_claim(staging.shards()[0], "dead-worker", 100)) == 10
    settings.MESSY_DRAIN_RECLAIM_IDLE_MS = 60_000
    assert services.messages_drain(staging.shards()[0], slot=0).entries == 0  # still too fresh to take over
    settings.MESSY_DRAIN_RECLAIM_IDLE_MS = 0
    assert services.messages_drain(staging.shards()[0], slot=0).stored == 10
    assert staging.backlog() == 0


def test_a_malformed_staged_entry_is_dead_lettered_and_does_not_block_the_others():
    write_many(3)
    staging.redis_client().xadd(staging.shards()[0].stream, {"m": b"{not json"})
    write_many(3)
    report = services.messages_drain(staging.shards()[0], slot=0)
    assert report.stored == 6
    assert staging.backlog() == 0
    [(_, fields)] = staging.redis_client().xrange(staging.dead_letter_key())
    assert fields[b"m"] == b"{not json"
    assert b"malformed" in fields[b"reason"]


def test_an_entry_whose_id_is_not_a_uuid_is_dead_lettered_and_the_rest_of_its_batch_is_stored():
    write_many(3)
    bad = {"id": "not-a-uuid", "username": "a", "city": "c", "state": "s", "message": "m", "accepted_at": 1}
    staging.redis_client().xadd(staging.shards()[0].stream, {"m": json.dumps(bad)})
    write_many(3)
    assert services.messages_drain(staging.shards()[0], slot=0).stored == 6
    assert staging.backlog() == 0
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 1


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_is_stored():
    write_many(4)
    poison = {
        "id": ids.message_id_text(),
        "username": "a\x00b",
        "city": "c",
        "state": "s",
        "message": "m",
        "accepted_at": 1_700_000_000_000,
    }
    staging.redis_client().xadd(staging.shards()[0].stream, {"m": json.dumps(poison)})
    write_many(4)
    report = services.messages_drain(staging.shards()[0], slot=0)
    assert report.stored == 8
    assert Message.objects.count() == 8
    assert staging.backlog() == 0
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 1
    assert totals()[0] == 8


def pending_count() -> int:
    return staging.redis_client().xpending(staging.shards()[0].stream, staging.CONSUMER_GROUP)["pending"]


def test_a_backlog_of_full_batches_is_stored_once_each_batch_read_while_the_one_before_is_stored(settings):
    settings.MESSY_DRAIN_BATCH_SIZE = 4
    write_many(18)
    report = services.messages_drain(staging.shards()[0], slot=0)
    assert (report.batches, report.entries, report.stored) == (5, 18, 18)
    assert Message.objects.count() == 18
    assert totals() == (18, 3, 1, 1)
    assert staging.backlog() == 0
    assert pending_count() == 0


def test_when_storing_fails_the_batch_read_ahead_stays_pending_and_the_retried_drain_stores_it(settings):
    """PostgreSQL refuses the second batch (a trigger raising, as a database outage would be an
    error that is neither DataError nor IntegrityError): the drain raises, the third batch it
    had read ahead waits pending with the second, and the next drain stores both."""
    settings.MESSY_DRAIN_BATCH_SIZE = 4
    write_many(4)
    body = {"username": "refused", "city": "Paris", "state": "IDF", "message": "m"}
    assert Client().post("/message/write/", data=body).status_code == 202
    write_many(7)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION messy_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.username = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER messy_test_refuse BEFORE INSERT ON message"
            " FOR EACH ROW EXECUTE FUNCTION messy_test_refuse()"
        )
    try:
        with pytest.raises(InternalError):
            services.messages_drain(staging.shards()[0], slot=0)
        assert Message.objects.count() == 4
        assert pending_count() == 8
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER messy_test_refuse ON message")
            cursor.execute("DROP FUNCTION messy_test_refuse()")
    assert services.messages_drain(staging.shards()[0], slot=0).stored == 8
    assert Message.objects.count() == 12
    assert totals()[0] == 12
    assert staging.backlog() == 0
    assert pending_count() == 0


def test_the_first_write_schedules_one_drain_and_later_writes_do_not():
    write_many(5)
    assert broker_queue_length() == 1


def test_a_finished_drain_releases_its_slot_so_the_next_write_schedules_again():
    write_many(1)
    services.messages_drain(staging.shards()[0], slot=0)
    assert staging.slot_acquire(staging.shards()[0], 0, "probe")


def test_the_sweep_schedules_a_drain_only_when_something_is_staged_and_no_drain_holds_the_slot():
    assert services.messages_sweep() is False
    write_many(2)  # takes slot 0 and publishes a drain
    assert services.messages_sweep() is False
    staging.slot_release(staging.shards()[0], 0)  # as if that drain task had been lost
    assert services.messages_sweep() is True
    assert broker_queue_length() == 2


def test_a_drain_that_finds_a_deep_backlog_starts_helpers_on_other_slots(settings):
    settings.MESSY_DRAIN_BATCH_SIZE = 5
    settings.MESSY_DRAIN_RUN_SECONDS = 0.0001  # one batch, then hand over
    staging.worker_heartbeat("host-a:1", 3)
    write_many(40)
    staging.redis_client().delete(staging.shards()[0].slot(1))
    before = broker_queue_length()
    services.messages_drain(staging.shards()[0], slot=0)
    # one fan-out helper on slot 1, plus the hand-over of slot 0
    assert broker_queue_length() == before + 2
    assert staging.redis_client().exists(staging.shards()[0].slot(1))


def deep_backlog_drained_once(settings) -> int:
    """How many drains are in flight after a drain finds a deep backlog and fans out until no
    slot is free (each helper's first batch runs the same fan-out)."""
    settings.MESSY_DRAIN_BATCH_SIZE = 5
    settings.MESSY_DRAIN_RUN_SECONDS = 0.0001
    if not staging.backlog():
        write_many(60)
    for slot in range(10):
        staging.slot_release(staging.shards()[0], slot)
    staging.slot_acquire(staging.shards()[0], 0, "test")
    for _ in range(10):  # as the helpers would, each on its slot
        for slot in range(10):
            if staging.redis_client().get(staging.shards()[0].slot(slot)) in (b"fan-out", b"test"):
                services.drain._fan_out_if_behind(staging.shards()[0], slot, settings.MESSY_DRAIN_BATCH_SIZE)
    return sum(bool(staging.redis_client().exists(staging.shards()[0].slot(slot))) for slot in range(10))


def test_adding_ingest_worker_processes_raises_the_drains_in_flight_with_no_setting_changed(settings):
    staging.worker_heartbeat("host-a:100", 2)
    assert staging.drain_capacity() == 2
    assert deep_backlog_drained_once(settings) == 2
    # A new host with three pool processes starts: nothing else changes.
    staging.worker_heartbeat("host-b:200", 3)
    assert staging.drain_capacity() == 5
    assert deep_backlog_drained_once(settings) == 5


def test_a_worker_that_stops_or_dies_no_longer_counts_towards_the_drains(settings):
    staging.worker_heartbeat("host-a:100", 2)
    staging.worker_heartbeat("host-b:200", 3)
    staging.worker_forget("host-a:100")
    assert staging.drain_capacity() == 3
    # host-b was killed with -9: its last word expires.
    members = staging.redis_client().zrange(staging.workers_key(), 0, -1)
    staging.redis_client().zadd(staging.workers_key(), dict.fromkeys(members, 1))
    assert staging.drain_capacity() == 1  # never 0: the write path's slot always drains


def test_the_drain_writes_with_copy_inside_one_transaction_per_batch(settings, django_assert_max_num_queries):
    settings.MESSY_DRAIN_BATCH_SIZE = 1000
    write_many(300)
    with django_assert_max_num_queries(15):
        services.messages_drain(staging.shards()[0], slot=0)
    assert Message.objects.count() == 300
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM message")
        assert cursor.fetchone()[0] == 300


def test_an_entry_deleted_while_pending_is_acknowledged_and_the_drain_goes_on(settings):
    """Issue 8, item 5: with one drain (WORKER_INGEST_CONCURRENCY=1), a pending entry deleted by
    an erasure came back empty from the pending read, the drain saw "nothing" and never read
    the new entries behind it."""
    settings.MESSY_DRAIN_RUN_SECONDS = 5
    held = write_many(5)
    staging.group_ensure(staging.shards()[0])
    consumer = staging.consumer_name()  # the drain below is this same process: one consumer
    pending = staging.batch_claim(staging.shards()[0], consumer, 100)  # read, then the process "crashed"
    assert len(pending) == 5
    staging.redis_client().xdel(staging.shards()[0].stream, pending[2].entry_id)
    behind = write_many(5)

    report = services.messages_drain(staging.shards()[0], slot=0)

    expected = set(held) - {json.loads(pending[2].payload)["id"]} | set(behind)
    assert report.stored == 9
    assert set(map(str, Message.objects.values_list("id", flat=True))) == expected
    assert staging.backlog() == 0
    assert staging.redis_client().xpending(staging.shards()[0].stream, staging.CONSUMER_GROUP)["pending"] == 0


def test_a_pending_read_of_only_deleted_entries_still_reaches_the_new_ones():
    write_many(2)
    staging.group_ensure(staging.shards()[0])
    consumer = staging.consumer_name()
    pending = staging.batch_claim(staging.shards()[0], consumer, 100)
    staging.redis_client().xdel(staging.shards()[0].stream, *[entry.entry_id for entry in pending])
    behind = write_many(3)
    assert [
        json.loads(e.payload)["id"] for e in staging.BatchReader(staging.shards()[0], consumer).claim(100)
    ] == behind
    assert staging.redis_client().xpending(staging.shards()[0].stream, staging.CONSUMER_GROUP)["pending"] == 3
