"""Drain concurrency follows the live ingest workers (real Celery workers, started through
./runworker.sh): each adds its pool processes to the drain slots while it lives."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from messages import staging
from tests.harness import ProcessGroup

pytestmark = pytest.mark.django_db(transaction=True)


def eventually(check: Callable[[], bool], timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_each_ingest_worker_adds_its_processes_to_the_drain_slots_and_takes_them_when_it_stops(
    subprocess_env: dict[str, str], artifacts_dir: Path
):
    group = ProcessGroup(subprocess_env, artifacts_dir)
    try:
        assert staging.drain_capacity() == 1  # no worker yet: the write path's own slot
        group.worker("ingest-a", role="ingest", concurrency=2)
        assert eventually(lambda: staging.drain_capacity() == 2)
        group.worker("jobs-only", role="jobs", concurrency=3)  # does not drain: does not count
        group.worker("ingest-b", role="ingest", concurrency=3)  # "a new host": no setting changed
        assert eventually(lambda: staging.drain_capacity() == 5)
        time.sleep(staging.WORKER_HEARTBEAT_SECONDS + 1)
        assert staging.drain_capacity() == 5
        group.processes.pop("ingest-a").stop()  # a warm shutdown withdraws at once
        assert eventually(lambda: staging.drain_capacity() == 3, timeout=5)
    finally:
        group.stop_all()
