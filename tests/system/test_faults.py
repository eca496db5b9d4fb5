"""Fault injection against real processes: nothing accepted is lost or stored twice."""

import time

import pytest

from tests.harness import database_create
from tests.system.stack import KEY_PREFIX, LoadResult, PrivatePostgres, assert_stored_exactly_once, load_run

pytestmark = pytest.mark.system


def pending_in_consumers(stack) -> int:
    """Entries handed to a worker and not yet acknowledged: a batch in flight."""
    try:
        summary = stack.staging_redis().xpending(f"{KEY_PREFIX}:{{s0}}:stream", "persisters")
    except Exception:
        return 0
    return summary["pending"]


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(stack):
    stack.start_web()
    stack.start_worker("doomed", concurrency=2)
    stack.start_beat()
    killed_holding = []

    def kill_mid_batch() -> None:
        """SIGKILL the worker (and its pool processes) while it holds a batch: freeze it when
        entries are pending, and kill it only if they still are (it may have acknowledged them
        in between); otherwise let it run and look again."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pending_in_consumers(stack) == 0:
                time.sleep(0.002)
                continue
            doomed = stack.processes["doomed"]
            doomed.freeze()
            held = pending_in_consumers(stack)
            if held:
                stack.kill("doomed")
                killed_holding.append(held)
                break
            doomed.thaw()
        stack.start_worker("replacement", concurrency=2)

    result = load_run(stack, singles=2000, batches=40, batch_size=250, during=kill_mid_batch)
    assert result.statuses == {202: 2040}
    assert killed_holding and killed_holding[0] > 0, "the worker was not holding a batch when killed"
    assert_stored_exactly_once(stack, result.accepted)


def test_restarting_memcached_under_load_costs_no_accepted_message(stack):
    stack.start_web()
    stack.start_worker()
    stack.start_beat()

    def restart_memcached() -> None:
        stack.kill("memcached")
        time.sleep(1.0)  # writes keep arriving while it is down
        stack.start_memcached()

    result = load_run(stack, singles=2500, batches=20, batch_size=200, during=restart_memcached)
    # memcached holds only copies: writes never fail because of it.
    assert result.statuses == {202: 2520}
    assert_stored_exactly_once(stack, result.accepted)


@pytest.fixture
def outage_stack(stack):
    """The stack on a PostgreSQL server of its own, which the test may stop."""
    server = PrivatePostgres()
    server.start()
    stack.postgres_use(server.port)
    database_create(stack.config)
    yield stack, server
    stack.stop_all()
    server.remove()


def test_postgres_down_for_30_seconds_delays_storing_but_loses_and_duplicates_nothing(outage_stack):
    stack, server = outage_stack
    stack.start_web()
    stack.start_worker()
    stack.start_beat()
    late_writes: list[LoadResult] = []
    answers: dict[str, tuple[int, dict]] = {}
    restarted: list[int] = []

    def outage() -> None:
        server.stop()
        time.sleep(5)
        # Writes never touch the database, so they are still accepted while it is down.
        late = load_run(stack, singles=200, batches=2, batch_size=100)
        late_writes.append(late)
        # Status reads fall back to the memcached copy while the database is away.
        answers["message"] = stack.get(f"/message/{late.accepted[0]}/")
        # Still ready for writes, so a load balancer keeps sending them; /status says why not all is well.
        answers["readyz"] = stack.get("/readyz")
        answers["status"] = stack.get("/status")
        time.sleep(25)
        server.start()
        restarted.append(stack.log("beat").count("Sending due task"))

    result = load_run(stack, singles=1500, batches=15, batch_size=200, during=outage)
    assert result.statuses == {202: 1515}
    (late,) = late_writes
    assert late.statuses == {202: 202}
    assert answers["message"] == (200, {"status": "pending", "id": late.accepted[0]})
    assert answers["readyz"][0] == 200, answers["readyz"]
    status, operators_view = answers["status"]
    assert status == 200 and operators_view["degraded"] is True, operators_view
    assert operators_view["components"]["postgres"]["status"].startswith("unavailable"), operators_view
    assert_stored_exactly_once(stack, result.accepted + late.accepted)
    # Beat rode out the outage: it is still sending its schedule afterwards.
    deadline = time.monotonic() + 20
    while stack.log("beat").count("Sending due task") <= restarted[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stack.log("beat").count("Sending due task") > restarted[0]
