"""Fault injection against real processes: nothing accepted is lost or stored twice."""

import time

import pytest

from tests.system.stack import KEY_PREFIX, assert_stored_exactly_once, load_run

pytestmark = pytest.mark.system


def pending_in_consumers(stack) -> int:
    """Entries handed to a worker and not yet acknowledged: a batch in flight."""
    try:
        summary = stack.staging_redis().xpending(f"{KEY_PREFIX}:stream:messages", "persisters")
    except Exception:
        return 0
    return summary["pending"]


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(stack):
    stack.start_web()
    stack.start_worker("doomed", concurrency=2)
    stack.start_beat()
    killed_holding = []

    def kill_mid_batch() -> None:
        deadline = time.monotonic() + 30
        while pending_in_consumers(stack) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        killed_holding.append(pending_in_consumers(stack))
        stack.kill("doomed")  # SIGKILL to the worker and its pool processes
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
