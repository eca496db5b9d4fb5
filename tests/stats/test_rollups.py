"""Rollups under concurrency: several worker processes store overlapping batches (same users,
cities, states and minutes; some messages delivered to two workers at once) while an erasure
runs, and the rollups must still equal a recount of the message table, with no deadlock."""

import json
import multiprocessing
import random
from datetime import timedelta

import pytest
from django.db import connections

from messages.models import Message
from messages.services import messages_erase_stored
from project.storage import s3_client
from stats.models import TopUser, Totals, UserCount
from stats.selectors import rollups_differences
from stats.services.publish import stats_publish
from stats.services.rollups import top_users_rebuild, top_users_rebuild_if_stale
from tests.stats.conftest import payload, store
from tests.stats.recount import stats_blob_recount

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 4
BATCHES = 12
BATCH_SIZE = 400
# Few keys, so every batch of every worker touches the same rollup rows.
USERS = [f"user{i}" for i in range(30)] + ["Zoë", "<b>bold</b>"]
PLACES = [("Austin", "TX"), ("Dallas", "TX"), ("Fresno", "CA"), ("Oakland", "CA"), ("Miami", "FL"), ("Tampa", "FL")]


def worker_batches(minute) -> list[list[list[dict]]]:
    """Per worker, its batches. Each batch also carries a slice of the next worker's batch
    (a message delivered twice, to two workers at the same time)."""
    rng = random.Random(42)

    def message():
        city, state = rng.choice(PLACES)
        return payload(rng.choice(USERS), city, state, minute - timedelta(minutes=rng.randrange(5)))

    own = [[[message() for _ in range(BATCH_SIZE)] for _ in range(BATCHES)] for _ in range(WORKERS)]
    return [
        [batch + own[(w + 1) % WORKERS][b][:50] for b, batch in enumerate(batches)] for w, batches in enumerate(own)
    ]


def _drain(start, batches) -> int:
    start.wait(60)
    return sum(store(batch) for batch in batches)


def erase(username: str) -> int:
    """What an erasure does: delete a user's messages and subtract them, in one transaction."""
    return messages_erase_stored(username, limit=1_000_000)


def _erase_repeatedly(start, usernames) -> int:
    start.wait(60)
    return sum(erase(username) for username in usernames for _ in range(3))


def run_in_processes(calls) -> list:
    """Run (function, args) pairs at once, each in its own process; return their results."""
    connections.close_all()  # a forked child must open its own connection
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(len(calls)) as pool:
        start = manager.Barrier(len(calls))
        pending = [pool.apply_async(function, (start, *args)) for function, args in calls]
        return [result.get(timeout=120) for result in pending]


def test_rollups_equal_a_recount_after_concurrent_drains_of_overlapping_batches(minute):
    batches = worker_batches(minute)
    unique_ids = {m["id"] for worker in batches for batch in worker for m in batch}

    stored = run_in_processes([(_drain, (worker,)) for worker in batches])

    assert sum(stored) == len(unique_ids) == Message.objects.count()
    assert rollups_differences() == []
    totals = Totals.objects.get()
    assert (totals.messages, totals.users, totals.cities, totals.states) == (len(unique_ids), len(USERS), 6, 3)


def test_the_published_blob_equals_a_recount_of_the_messages_after_concurrent_drains(minute, stats_bucket, settings):
    # A leaderboard with as few places as the top list, so concurrent drains admit, update
    # and trim board rows all the time.
    settings.STATS_TOP_USERS_KEPT = settings.STATS_TOP_USERS
    top_users_rebuild()
    run_in_processes([(_drain, (worker,)) for worker in worker_batches(minute)])

    stats_publish(now=minute)

    obj = s3_client().get_object(Bucket=stats_bucket, Key=settings.STATS_BLOB_KEY)
    assert json.loads(obj["Body"].read()) == stats_blob_recount(minute)


def test_rollups_equal_a_recount_when_an_erasure_runs_during_the_drains(minute):
    store([payload(user, "Austin", "TX", minute) for user in USERS])
    batches = worker_batches(minute)

    run_in_processes([(_drain, (worker,)) for worker in batches] + [(_erase_repeatedly, (["user1", "Zoë"],))])

    assert rollups_differences() == []
    top_users_rebuild_if_stale()
    top = list(UserCount.objects.order_by("-messages", "username").values_list("username", "messages")[:10])
    assert list(TopUser.objects.order_by("-messages", "username").values_list("username", "messages")[:10]) == top


def test_a_second_delivery_of_a_batch_changes_no_rollup(minute):
    batch = [payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)]
    assert store(batch) == 2

    assert store(batch) == 0

    assert rollups_differences() == []
    assert Totals.objects.get().messages == 2


def test_erasing_the_last_message_of_a_user_city_and_state_removes_them_from_the_counts(minute):
    store([payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)])

    assert erase("bob") == 1

    totals = Totals.objects.get()
    assert (totals.messages, totals.users, totals.cities, totals.states) == (1, 1, 1, 1)
    assert rollups_differences() == []
