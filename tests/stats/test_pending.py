"""Drains that never wait on each other: each batch's counts go in as a pending row, one fold at
a time adds them to the rollup rows (docs/scaling.md). Two drains whose batches touch the same
states, cities, users and minute store them side by side, a publish or a check sees every
committed count, and a fold taken twice in one transaction counts nothing twice."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction

from messages.services import messages_erase_stored, messages_persist
from project.storage import s3_client
from stats.models import PendingRollup, StateCount, Totals
from stats.selectors import messages_accepted_before, rollups_differences
from stats.services.publish import stats_publish
from stats.services.rollups import rollups_fold
from tests.stats.conftest import payload
from tests.stats.recount import stats_blob_recount
from tests.stats.test_rollups import run_in_processes, worker_batches

pytestmark = pytest.mark.django_db(transaction=True)


def batch(minute, users=("alice", "bob", "carol"), places=(("Austin", "TX"), ("Miami", "FL"))):
    return [payload(user, city, state, minute) for user in users for city, state in places]


def test_a_drain_stores_its_batch_while_another_drain_holds_the_same_rollup_keys(minute, settings):
    """The old design made the second drain wait for the first one's commit at its first state
    row; here it must not wait at all (lock_timeout turns a wait into an error)."""
    settings.STATS_ROLLUP_FOLD_SECONDS = 0  # the first drain folds too, holding the rollup rows
    first_stored, release = threading.Event(), threading.Event()

    def first_drain():
        try:
            with transaction.atomic():
                messages_persist(batch(minute), defer_rollups=True)
                first_stored.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=first_drain)
    holder.start()
    try:
        assert first_stored.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
        assert messages_persist(batch(minute), defer_rollups=True) == 6
    finally:
        release.set()
        holder.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert rollups_differences() == []
    rollups_fold()
    assert Totals.objects.get().messages == 12
    assert StateCount.objects.get(state="TX").messages == 6


def test_counts_left_pending_are_in_the_check_the_retention_count_and_the_published_blob(
    minute, stats_bucket, settings
):
    settings.STATS_ROLLUP_FOLD_SECONDS = 3600
    messages_persist(batch(minute), defer_rollups=False)  # folds: the timer starts here
    messages_persist(batch(minute, users=("dave",)), defer_rollups=True)
    messages_persist(batch(minute, users=("erin", "alice")), defer_rollups=True)
    assert PendingRollup.objects.count() >= 1

    assert rollups_differences() == []
    assert PendingRollup.objects.count() >= 1  # the check changed nothing
    assert messages_accepted_before(minute + timedelta(minutes=1)) == 12

    stats_publish(now=minute)

    assert PendingRollup.objects.count() == 0
    blob = json.loads(s3_client().get_object(Bucket=stats_bucket, Key=settings.STATS_BLOB_KEY)["Body"].read())
    assert blob == stats_blob_recount(minute)
    assert blob["totals"] == {"messages": 12, "users": 5, "cities": 2, "states": 2}


def test_an_erasure_subtracts_exactly_counts_still_pending(minute, settings):
    settings.STATS_ROLLUP_FOLD_SECONDS = 3600
    messages_persist(batch(minute, users=("zed",)), defer_rollups=False)
    messages_persist(batch(minute, users=("bob",)), defer_rollups=True)

    assert messages_erase_stored("bob", limit=100) == 2

    assert PendingRollup.objects.count() == 0  # an erasure folds at once
    totals = Totals.objects.get()
    assert (totals.messages, totals.users) == (2, 1)
    assert rollups_differences() == []


def test_a_transaction_that_folds_twice_counts_each_batch_once(minute):
    with transaction.atomic():
        messages_persist(batch(minute, users=("a",)))
        messages_persist(batch(minute, users=("b",)))
        assert rollups_differences() == []
    assert Totals.objects.get().messages == 4
    assert rollups_differences() == []


def _deferred_drain(start, batches) -> int:
    start.wait(60)
    return sum(messages_persist(b, defer_rollups=True) for b in batches)


def test_rollups_equal_a_recount_after_concurrent_deferring_drains(minute, settings):
    settings.STATS_ROLLUP_FOLD_SECONDS = 0.05  # many folds, each racing the others' inserts
    batches = worker_batches(minute)
    unique_ids = {m["id"] for worker in batches for b in worker for m in b}

    stored = run_in_processes([(_deferred_drain, (worker,)) for worker in batches])

    assert sum(stored) == len(unique_ids)
    assert rollups_differences() == []
    rollups_fold()
    assert Totals.objects.get().messages == len(unique_ids)
