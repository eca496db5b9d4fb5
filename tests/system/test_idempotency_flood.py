"""One anonymous address flooding keyed writes (a fresh Idempotency-Key each) against a small
staging Redis, with workers draining: its idempotency records are refused once its budget is
spent, so the Redis never fills; writes from other addresses stay 202 and /readyz stays ready
throughout, and everything answered 202 is stored exactly once (issue 20, docs/fairness.md).

Other clients are other loopback addresses: the client socket is bound to 127.0.0.2 and up,
which the web server sees as REMOTE_ADDR (only 127.0.0.1 is a trusted proxy)."""

import concurrent.futures
import http.client
import json
import threading
import time
import uuid
from collections import Counter

import pytest

from tests.harness import free_port
from tests.system.stack import Stack, assert_stored_exactly_once, message_body
from tests.system.test_durability import staging_redis_start

pytestmark = pytest.mark.system

FLOODER, OTHERS = "127.0.0.2", ("127.0.0.3", "127.0.0.4")
# Before, each keyed write left a record for 24 h, drained or not: this many filled the 4 MB
# Redis, and with it every other client's writes and /readyz.
FLOOD = 12_000


def post_from(stack: Stack, address: str, body: object, **headers: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=30, source_address=(address, 0))
    try:
        connection.request("POST", "/message/write/", json.dumps(body), {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_a_keyed_flood_from_one_address_never_takes_the_others_writes_or_readiness_down(stack, tmp_path):
    redis = staging_redis_start(stack, tmp_path / "redis", free_port(), REDIS_MAXMEMORY="4mb")
    # A small Redis gets budgets to match (docs/fairness.md): half of it for the backlog, under
    # half for the records.
    stack.env = {
        **stack.env,
        "MESSY_BACKLOG_MAX_BYTES": str(2 * 2**20),
        "MESSY_IDEMPOTENCY_MAX_BYTES": str(1536 * 2**10),
        "MESSY_IDEMPOTENCY_CLIENT_BYTES": str(2**20),
    }
    stack.start_web(processes=2)
    stack.start_worker()
    stack.start_beat()

    flood: Counter[tuple[int, str]] = Counter()
    accepted: list[str] = []
    others: Counter[int] = Counter()
    readiness: Counter[int] = Counter()
    peak_memory = [0]
    done = threading.Event()

    def flood_one(i: int) -> None:
        status, body = post_from(stack, FLOODER, message_body(i), **{"Idempotency-Key": str(uuid.uuid4())})
        flood[(status, body.get("error", ""))] += 1
        if status == 202:
            accepted.append(body["id"])

    def other_clients() -> None:
        i = 0
        while not done.is_set():
            status, body = post_from(stack, OTHERS[i % 2], message_body(100_000 + i))
            others[status] += 1
            if status == 202:
                accepted.append(body["id"])
            i += 1
            time.sleep(0.02)

    def watch() -> None:
        while not done.is_set():
            readiness[stack.get("/readyz")[0]] += 1
            peak_memory[0] = max(peak_memory[0], redis.info("memory")["used_memory"])
            time.sleep(0.1)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        background = [pool.submit(other_clients), pool.submit(watch)]
        for future in [pool.submit(flood_one, i) for i in range(FLOOD)]:
            future.result()
        done.set()
        for future in background:
            future.result()

    maxmemory = int(redis.config_get("maxmemory")["maxmemory"])
    # The flood's records were refused once its budget was spent, its plain writes never.
    assert flood[(429, "idempotency_quota_exceeded")] > FLOOD // 2, flood
    assert set(flood) <= {(202, ""), (429, "idempotency_quota_exceeded")}, flood
    assert others and set(others) == {202}, others
    assert readiness and set(readiness) == {200}, readiness
    assert peak_memory[0] < maxmemory * 0.9, (peak_memory[0], maxmemory)
    # Still room for the others' keyed writes (their own budget), and for everyone's plain ones.
    for address, headers in ((OTHERS[0], {"Idempotency-Key": "after-the-flood"}), (FLOODER, {})):
        status, body = post_from(stack, address, message_body(1), **headers)
        assert status == 202, body
        accepted.append(body["id"])
    assert_stored_exactly_once(stack, accepted)
