"""A status read costs a bounded number of Redis calls whatever the backlog: the stage script
leaves a marker naming each message's entry, so the read never walks the stream."""

import json
import uuid

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client

from messages import ids, services, staging
from tests.harness import redis_admin

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}
BACKLOG = 40_000


# Not the read's: the measurement's own and a connection's upkeep (redis-py's health check).
NOT_COUNTED = ("cmdstat_info", "cmdstat_config", "cmdstat_ping", "cmdstat_select", "cmdstat_client", "cmdstat_hello")


def redis_calls(read) -> int:
    """Redis commands `read()` sent (INFO commandstats of the test's Redis before and after)."""
    # Messy's own users may not reset or read the server's statistics: the operators' may.
    client = redis_admin(settings.REDIS_URL)
    client.config_resetstat()
    read()
    stats = client.info("commandstats")
    return sum(s["calls"] for name, s in stats.items() if not name.startswith(NOT_COUNTED))


@pytest.fixture
def backlog(settings) -> list[str]:
    """BACKLOG staged messages, all within the clock skew of an id minted just before them (the
    window a status read once walked); their memcached copies gone."""
    settings.MESSY_CLOCK_SKEW_MS = 120_000
    settings.MESSY_QUOTA_RATE = 0
    settings.MESSY_BACKLOG_CLIENT_SHARE = 0
    client = Client()
    accepted = []
    for _ in range(BACKLOG // 1000):
        response = client.post("/message/batch/", data=json.dumps([GOOD] * 1000), content_type="application/json")
        accepted += [item["id"] for item in response.json()["results"]]
    caches["staged"].clear()
    assert staging.backlog() == BACKLOG
    return accepted


def test_a_status_read_of_an_unknown_id_costs_a_few_redis_calls_whatever_the_backlog(backlog):
    before_the_backlog = str(uuid.UUID(int=(ids.message_id_ms(uuid.UUID(backlog[0])) - 1) << 80 | 0x7 << 76))
    answers = []
    calls = redis_calls(lambda: answers.append(Client().get(f"/message/{before_the_backlog}/")))
    assert answers[0].status_code == 404
    assert calls <= len(staging.shards()) + 1, calls


def test_a_status_read_of_a_staged_message_without_its_copy_costs_two_calls(backlog):
    answers: list = []
    for message_id in (backlog[0], backlog[len(backlog) // 2], backlog[-1]):
        calls = redis_calls(lambda m=message_id: answers.append(Client().get(f"/message/{m}/")))
        assert answers[-1].json() == {"status": "pending", "id": message_id}
        assert calls <= 2, calls


def test_stored_messages_lose_their_markers(settings):
    client = Client()
    message_id = client.post("/message/write/", data=json.dumps(GOOD), content_type="application/json").json()["id"]
    assert staging.redis_client().exists(staging.marker_key(staging.shards()[0], message_id))
    services.messages_drain(staging.shards()[0], slot=0)
    assert not staging.redis_client().exists(staging.marker_key(staging.shards()[0], message_id))
    assert client.get(f"/message/{message_id}/").json()["status"] == "stored"
