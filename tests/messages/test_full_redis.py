"""A staging Redis over its maxmemory (noeviction): writes are refused with 503 and
Retry-After, never 500, and the drains still empty the stream, storing every message once.

Each test runs its own small Redis (scripts/redis.sh, the project's configuration, with a few
megabytes of maxmemory) and points the staging client at it.
"""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client

from messages import services, staging
from messages.models import Message
from project.redis import redis_client_reset
from tests.harness import redis_admin, redis_user_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
MAXMEMORY = 4 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(client: redis.Redis, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and server.poll() is None:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("the test's Redis did not start")


@dataclass
class SmallRedis:
    client: redis.Redis

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def is_full(self) -> bool:
        try:
            self.client.set("probe", b"x")
        except redis.exceptions.OutOfMemoryError:
            return True
        self.client.delete("probe")
        return False

    def fill_with_junk(self) -> None:
        """Junk keys until Redis refuses even a small one: it stays over maxmemory until they
        go. (A big value is refused a little early: its own bytes count.)"""
        for size in (16_384, 64):
            for i in range(100_000):
                try:
                    self.client.set(f"junk:{size}:{i}", b"j" * size)
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("Redis never filled up")

    def junk_delete(self) -> None:
        for junk in self.client.scan_iter("junk:*", count=1000):
            self.client.delete(junk)


@pytest.fixture
def small_redis(tmp_path: Path, settings) -> Iterator[SmallRedis]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {
        **os.environ,
        "MESSY_NO_LOCAL_SH": "1",
        "REDIS_URL": url,
        "REDIS_DATA_DIR": str(tmp_path),
        "REDIS_BIND": "127.0.0.1",
    }
    log = (tmp_path / "redis.log").open("w")
    server = subprocess.Popen(
        [str(ROOT / "scripts" / "redis.sh"), "staging", "--maxmemory", str(MAXMEMORY), "--save", ""],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        client = redis_admin(url)
        wait_until_up(client, server)
        settings.REDIS_URL = redis_user_url(url)
        redis_client_reset()
        yield SmallRedis(client)
    finally:
        redis_client_reset()
        server.terminate()
        server.wait(10)
        log.close()


GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello " * 30}


def write(client: Client, body=None, **headers):
    return client.post(
        "/message/write/", data=json.dumps(body or GOOD), content_type="application/json", headers=headers
    )


def batch(client: Client, size: int):
    items = [{**GOOD, "username": f"u{i % 50}"} for i in range(size)]
    return client.post("/message/batch/", data=json.dumps(items), content_type="application/json")


def accepted_ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"] if item["status"] == "accepted"]


def fill_with_messages(client: Client) -> tuple[list[str], Any]:
    """Batches, then single messages, until Redis refuses them; return the accepted ids and
    the last refusal. (A big batch is refused a little early: its own bytes count.)"""
    ids: list[str] = []
    refused: Any = None
    for size in (200, 1):
        for _ in range(5000):
            response = batch(client, size)
            if response.status_code != 202:
                refused = response
                break
            ids.extend(accepted_ids(response))
        else:
            raise AssertionError("Redis never filled up")
    return ids, refused


def assert_stored_exactly_once(ids: list[str]) -> None:
    stored = [str(message_id) for message_id in Message.objects.values_list("id", flat=True)]
    assert len(stored) == len(set(stored))
    assert set(stored) == set(ids)


def test_when_redis_is_full_writes_get_503_with_retry_after_and_a_drain_empties_it(small_redis):
    client = Client()
    ids, refused = fill_with_messages(client)
    # At its maxmemory. (Not is_full(): the last refusal may leave Redis only a few hundred bytes
    # over, and its client buffers shrinking a moment later brings it back under.)
    assert ids and small_redis.used_memory() > MAXMEMORY * 0.95
    assert refused.status_code == 503
    assert refused["Retry-After"]
    assert refused.json()["error"] == "staging_full"
    single = write(client, **{"Idempotency-Key": "k-full"})
    assert (single.status_code, single.json()["error"]) == (503, "staging_full")

    # The group was made by the first write (a full Redis refuses XGROUP CREATE).
    report = services.messages_drain(staging.shards()[0], slot=0)

    assert report.stored == len(ids)
    assert_stored_exactly_once(ids)
    assert staging.backlog() == 0
    assert small_redis.client.xpending(staging.shards()[0].stream, staging.CONSUMER_GROUP)["pending"] == 0
    assert write(client).status_code == 202
    assert batch(client, 10).status_code == 202


def test_a_drain_acks_and_deletes_while_redis_stays_over_maxmemory(small_redis):
    client = Client()
    ids = accepted_ids(batch(client, 300))
    small_redis.fill_with_junk()
    assert write(client).json()["error"] == "staging_full"

    report = services.messages_drain(staging.shards()[0], slot=0)

    assert small_redis.is_full()  # all along: the junk is still there
    assert report.stored == 300
    assert_stored_exactly_once(ids)
    assert staging.backlog() == 0
    assert small_redis.client.xpending(staging.shards()[0].stream, staging.CONSUMER_GROUP)["pending"] == 0
    small_redis.junk_delete()
    assert write(client).status_code == 202


def test_while_redis_is_full_the_sweep_still_starts_a_drain(small_redis, settings):
    batch(Client(), 20)
    small_redis.fill_with_junk()
    staging.slot_release(staging.shards()[0], 0)
    assert services.messages_sweep() is True


def test_an_entry_that_cannot_be_dead_lettered_while_full_stays_pending_and_does_not_block_the_rest(
    small_redis,
):
    client = Client()
    ids = accepted_ids(batch(client, 20))
    small_redis.client.xadd(staging.shards()[0].stream, {"m": b"{not json"})
    ids += accepted_ids(batch(client, 20))
    small_redis.fill_with_junk()

    assert services.messages_drain(staging.shards()[0], slot=0).stored == 40
    assert_stored_exactly_once(ids)
    # The malformed entry waits, pending, for a Redis with room for its dead letter.
    assert staging.backlog() == 1
    assert small_redis.client.xlen(staging.dead_letter_key()) == 0

    small_redis.junk_delete()
    services.messages_drain(staging.shards()[0], slot=0)
    assert staging.backlog() == 0
    assert small_redis.client.xlen(staging.dead_letter_key()) == 1
