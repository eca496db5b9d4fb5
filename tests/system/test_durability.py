"""The staging Redis as make run configures it (deploy/redis.conf through scripts/redis.sh:
append-only file, noeviction): killed with a backlog staged, or full, it loses nothing that was
answered 202, and writes are answered throughout (202, or 503 with Retry-After)."""

import time
from pathlib import Path

import pytest
import redis

from tests.harness import free_port, redis_admin, wait_for_port
from tests.system.stack import KEY_PREFIX, Stack, assert_stored_exactly_once, load_run, message_body

pytestmark = pytest.mark.system

STREAM = f"{KEY_PREFIX}:{{s0}}:stream"


def staging_redis_start(stack: Stack, data_dir: Path, port: int, **settings: str) -> redis.Redis:
    """The project's staging Redis (scripts/redis.sh staging) on `port` with its data in
    `data_dir`; Messy processes started from now on stage there, through its Unix socket, as
    make run's do. Returns a client on its TCP port."""
    url = f"redis://127.0.0.1:{port}/0"
    stack.start(
        "redis",
        ["./scripts/redis.sh", "staging"],
        REDIS_URL=url,
        REDIS_DATA_DIR=str(data_dir),
        REDIS_BIND="127.0.0.1",
        **settings,
    )
    wait_for_port(port)
    stack.env = {**stack.env, "REDIS_URL": f"unix://{data_dir}/redis.sock?db=0"}
    return redis_admin(url)


def test_kill_9_of_redis_with_a_backlog_staged_loses_nothing_acknowledged(stack, tmp_path):
    port = free_port()
    staging = staging_redis_start(stack, tmp_path / "redis", port)
    stack.start_web()
    # No worker yet: everything accepted stays staged in Redis.
    staged = load_run(stack, singles=1000, batches=12, batch_size=250)
    assert staged.statuses == {202: 1012}
    backlog_at_kill = []

    def kill_and_restart() -> None:
        backlog_at_kill.append(staging.xlen(STREAM))
        stack.kill("redis")  # kill -9: no shutdown, no final fsync
        time.sleep(0.5)  # writes keep arriving while it is down
        staging_redis_start(stack, tmp_path / "redis", port)

    during = load_run(stack, singles=1500, batches=6, batch_size=100, during=kill_and_restart)
    # Writes are answered throughout: accepted, or refused with 503 while Redis is down.
    assert set(during.statuses) <= {202, 503}, during.statuses
    assert backlog_at_kill[0] >= 3000, backlog_at_kill
    stack.start_worker()
    stack.start_beat()
    assert_stored_exactly_once(stack, staged.accepted + during.accepted)
    assert staging.xlen(STREAM) == 0


def test_a_full_redis_refuses_writes_with_503_and_drains_back_to_accepting(stack, tmp_path):
    staging = staging_redis_start(stack, tmp_path / "redis", free_port(), REDIS_MAXMEMORY="6mb")
    stack.start_web()
    accepted: list[str] = []
    refusal: dict = {}
    # Batches until Redis refuses one, then single writes until Redis refuses those too.
    for path, body_of in (
        ("/message/batch/", lambda i: [message_body(i * 100 + j) for j in range(100)]),
        ("/message/write/", message_body),
    ):
        for i in range(10_000):
            status, body = stack.post(path, body_of(i))
            if status != 202:
                assert status == 503, body
                refusal = body
                break
            accepted.extend(
                [r["id"] for r in body["results"] if r["status"] == "accepted"] if "results" in body else [body["id"]]
            )
        else:
            pytest.fail(f"{path}: Redis never filled up")
    assert refusal["error"] == "staging_full", refusal
    assert len(accepted) > 1000
    info = staging.info("memory")
    assert info["used_memory"] >= info["maxmemory"] * 0.9

    stack.start_worker()
    stack.start_beat()
    deadline = time.monotonic() + 120
    while staging.xlen(STREAM) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert staging.xlen(STREAM) == 0, "the drains could not empty a full Redis"
    status, body = stack.post("/message/write/", message_body(1))
    assert status == 202, body
    accepted.append(body["id"])
    assert_stored_exactly_once(stack, accepted)
