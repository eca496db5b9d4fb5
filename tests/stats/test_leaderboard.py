"""The top-users leaderboard stays equal to the top of the per-user counts it summarises."""

import random
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from messages.services import messages_erase_stored
from stats.models import TopUser, Totals, UserCount
from stats.services import rollups
from tests.stats.conftest import payload, store

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def board(limit: int) -> list[tuple[str, int]]:
    return list(TopUser.objects.order_by("-messages", "username").values_list("username", "messages")[:limit])


def true_top(limit: int) -> list[tuple[str, int]]:
    return list(UserCount.objects.order_by("-messages", "username").values_list("username", "messages")[:limit])


def test_drains_keep_the_board_equal_to_the_true_top_users_batch_after_batch(settings):
    settings.STATS_TOP_USERS_KEPT = 5
    rollups.top_users_rebuild()
    rng = random.Random(7)
    users = [f"user{i}" for i in range(60)]
    for _ in range(40):
        # Skewed: a few users write often, so leaders change as batches land.
        batch = [payload(rng.choice(users[: rng.randint(3, 60)]), "c", "s", NOW) for _ in range(rng.randint(1, 80))]
        store(batch)
        assert board(5) == true_top(5)
        assert TopUser.objects.count() <= 2 * 5 + 80
    # Drains never need a rebuild: only an erasure can make the board stale.
    assert Totals.objects.get().top_users_stale is False


def test_erasing_a_leader_marks_the_board_stale_and_the_next_rebuild_repairs_it(settings):
    settings.STATS_TOP_USERS_KEPT = 2
    store([payload("alice", "c", "s", NOW) for _ in range(5)])
    store([payload("bob", "c", "s", NOW) for _ in range(4)])
    store([payload("carol", "c", "s", NOW) for _ in range(3)])
    assert board(2) == [("alice", 5), ("bob", 4)]
    messages_erase_stored("alice", limit=100)
    # carol (outside the board) now belongs in the top two: the board knows it may be wrong.
    assert Totals.objects.get().top_users_stale is True
    assert rollups.top_users_rebuild_if_stale() is True
    assert board(2) == true_top(2) == [("bob", 4), ("carol", 3)]
    assert Totals.objects.get().top_users_stale is False
    assert rollups.top_users_rebuild_if_stale() is False


def test_stats_reconcile_fix_rebuilds_the_board(settings):
    settings.STATS_TOP_USERS_KEPT = 3
    store([payload(f"user{i}", "c", "s", NOW) for i in range(10) for _ in range(i + 1)])
    TopUser.objects.all().delete()
    call_command("stats_reconcile", "--fix")
    assert board(3) == true_top(3) == [("user9", 10), ("user8", 9), ("user7", 8)]


def test_users_writing_at_exactly_the_same_rate_rank_by_name_on_the_board(settings):
    """Every user ties with every other: the board must still equal the true top (ties broken
    by username), and tied users who sort after the last place stay off it."""
    settings.STATS_TOP_USERS_KEPT = 4
    rollups.top_users_rebuild()
    users = [f"user{i:02d}" for i in range(30)]
    for _ in range(5):
        for start in range(0, 30, 7):
            store([payload(u, "c", "s", NOW) for u in users[start : start + 7]])
            assert board(4) == true_top(4)
    assert TopUser.objects.count() <= 2 * 4 + 7
