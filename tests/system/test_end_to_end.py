"""The whole service, as operators run it: web, workers and beat started by the run scripts."""

import pytest

from tests.system.stack import assert_stored_exactly_once, load_run

pytestmark = pytest.mark.system


def test_thousands_of_concurrent_writes_are_each_stored_exactly_once(stack):
    stack.start_web()
    stack.start_worker("worker-1")
    stack.start_worker("worker-2")
    stack.start_beat()
    result = load_run(stack, singles=3000, batches=30, batch_size=200)
    assert result.statuses == {202: 3030}
    assert len(result.accepted) == 3000 + 30 * 200
    assert_stored_exactly_once(stack, result.accepted)
    status, body = stack.get(f"/message/{result.accepted[0]}/")
    assert (status, body["status"]) == (200, "stored")


def test_messages_staged_while_no_worker_runs_are_stored_once_one_starts(stack):
    stack.start_web()
    result = load_run(stack, singles=300, batches=5, batch_size=100)
    assert result.statuses == {202: 305}
    status, body = stack.get(f"/message/{result.accepted[-1]}/")
    assert (status, body["status"]) == (200, "pending")
    stack.start_worker()
    stack.start_beat()  # its sweep starts a drain even if the first drain task was lost
    assert_stored_exactly_once(stack, result.accepted)
