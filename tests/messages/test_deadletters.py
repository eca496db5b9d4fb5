"""Dead letters are never silently dropped: listed without personal data, replayed once the
cause is fixed (stored exactly once), purged only on purpose, and counted in /metrics."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from messages import services, staging
from messages.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def write(username: str) -> str:
    body = {**GOOD, "username": username}
    response = Client().post("/message/write/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202
    return response.json()["id"]


def deadletters(*args: str) -> str:
    out = StringIO()
    call_command("deadletters", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def blocked_user():
    """PostgreSQL refuses the messages of user "blocked" until the test lifts the cause."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE message ADD CONSTRAINT test_refusal CHECK (username <> 'blocked')")

    def lift() -> None:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE message DROP CONSTRAINT IF EXISTS test_refusal")

    yield lift
    lift()


def test_a_dead_letter_replayed_after_its_cause_is_fixed_is_stored_exactly_once(blocked_user):
    fine = [write("ada"), write("bob")]
    refused = write("blocked")
    assert services.messages_drain(staging.shards()[0], slot=0).stored == 2
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 1

    blocked_user()
    assert "Replayed 1 dead letters" in deadletters("replay")
    services.messages_drain(staging.shards()[0], slot=0)
    deadletters("replay")  # nothing left: changes nothing

    assert sorted(str(i) for i in Message.objects.values_list("id", flat=True)) == sorted([*fine, refused])
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 0
    assert staging.backlog() == 0


def test_a_dead_letter_replayed_twice_is_stored_once():
    message_id = write("ada")
    entry = staging.BatchReader(staging.shards()[0], "test").claim(10)[0]
    staging.group_ensure(staging.shards()[0])
    assert staging.dead_letter(staging.shards()[0], entry, "simulated")
    letter = staging.dead_letters_page()[0]
    staging.redis_client().xadd(staging.dead_letter_key(), {"m": letter.payload, "reason": "again"})
    assert services.dead_letters_replay() == 2
    services.messages_drain(staging.shards()[0], slot=0)
    assert [str(i) for i in Message.objects.values_list("id", flat=True)] == [message_id]


def test_the_list_shows_no_message_content_or_username_unless_asked(blocked_user):
    refused = write("blocked")
    services.messages_drain(staging.shards()[0], slot=0)
    listed = deadletters("list")
    assert refused in listed and "database refused the row" in listed and "1 dead letters listed" in listed
    assert "blocked" not in listed.replace("database refused", "") and "hello" not in listed
    shown = deadletters("list", "--show")
    assert '"username":"blocked"' in shown and "hello" in shown


def test_replay_and_purge_can_name_single_entries(blocked_user):
    write("blocked")
    write("blocked")
    services.messages_drain(staging.shards()[0], slot=0)
    first, second = (letter.entry_id for letter in staging.dead_letters_page())
    blocked_user()
    deadletters("replay", "--id", first)
    assert [letter.entry_id for letter in staging.dead_letters_page()] == [second]
    assert "Purged 1" in deadletters("purge", "--id", second)
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 0
    services.messages_drain(staging.shards()[0], slot=0)
    assert Message.objects.count() == 1


def test_purging_everything_needs_all_and_yes(blocked_user):
    write("blocked")
    services.messages_drain(staging.shards()[0], slot=0)
    with pytest.raises(CommandError):
        deadletters("purge", "--all")
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 1
    assert "Purged 1" in deadletters("purge", "--all", "--yes")
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 0


def test_dead_letters_are_never_trimmed(settings):
    staging.group_ensure(staging.shards()[0])
    for i in range(3):
        staging.redis_client().xadd(staging.shards()[0].stream, {"m": f"not json {i}"})
    services.messages_drain(staging.shards()[0], slot=0)
    assert staging.redis_client().xlen(staging.dead_letter_key()) == 3
    assert staging.redis_client().xinfo_stream(staging.dead_letter_key())["max-deleted-entry-id"] == b"0-0"


def test_metrics_count_dead_letters_and_the_oldest_age():
    text = Client().get("/metrics").content.decode()
    assert "messy_dead_letters 0.0" in text
    staging.redis_client().xadd(staging.dead_letter_key(), {"m": b"x", "reason": "test"}, id="1000-0")
    text = Client().get("/metrics").content.decode()
    assert "messy_dead_letters 1.0" in text
    [age] = [line for line in text.splitlines() if line.startswith("messy_dead_letter_oldest_age_seconds ")]
    assert float(age.split()[1]) > 1_000_000
