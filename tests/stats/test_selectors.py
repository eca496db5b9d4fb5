from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from stats import selectors
from stats.models import CityCount, MinuteCount, StateCount, TopUser
from tests.stats.conftest import payload, store
from tests.stats.recount import stats_blob_recount

pytestmark = pytest.mark.django_db


def known_messages(now):
    """Seven messages: three users, three cities in two states, over three minutes."""
    two_ago, one_ago = now - timedelta(minutes=2), now - timedelta(minutes=1)
    return [
        payload("alice", "Austin", "TX", two_ago),
        payload("alice", "Austin", "TX", two_ago),
        payload("alice", "Dallas", "TX", one_ago),
        payload("bob", "Austin", "TX", one_ago),
        payload("bob", "Fresno", "CA", one_ago),
        payload("<img src=x onerror=alert(1)>", "Fresno", "CA", now),
        payload("carol", "Fresno", "CA", now - timedelta(hours=3)),
    ]


def test_the_blob_of_a_known_data_set(minute, settings):
    settings.STATS_TIMELINE_MINUTES = 5
    store(known_messages(minute))

    blob = selectors.stats_blob_build(minute)

    assert blob == {
        "schema_version": 1,
        "generated_at": "2026-11-25T12:34:56.000Z",
        "totals": {"messages": 7, "users": 4, "cities": 3, "states": 2},
        "newest_message_at": "2026-11-25T12:34:56.000Z",
        "states": [{"state": "TX", "messages": 4}, {"state": "CA", "messages": 3}],
        "top_cities": [
            {"state": "CA", "city": "Fresno", "messages": 3},
            {"state": "TX", "city": "Austin", "messages": 3},
            {"state": "TX", "city": "Dallas", "messages": 1},
        ],
        "top_users": [
            {"username": "alice", "messages": 3},
            {"username": "bob", "messages": 2},
            {"username": "<img src=x onerror=alert(1)>", "messages": 1},
            {"username": "carol", "messages": 1},
        ],
        "timeline": [
            {"minute": "2026-11-25T12:30:00.000Z", "messages": 0},
            {"minute": "2026-11-25T12:31:00.000Z", "messages": 0},
            {"minute": "2026-11-25T12:32:00.000Z", "messages": 2},
            {"minute": "2026-11-25T12:33:00.000Z", "messages": 3},
            {"minute": "2026-11-25T12:34:00.000Z", "messages": 1},
        ],
    }


def test_the_blob_from_rollups_equals_the_blob_recounted_from_the_messages(minute, settings):
    settings.STATS_TOP_USERS = 3
    store(known_messages(minute))

    assert selectors.stats_blob_build(minute) == stats_blob_recount(minute)


def test_the_top_lists_have_the_sizes_the_settings_give(minute, settings):
    settings.STATS_TOP_USERS = 2
    settings.STATS_TOP_CITIES = 1
    settings.STATS_STATES_MAX = 1
    store(known_messages(minute))

    blob = selectors.stats_blob_build(minute)

    assert [u["username"] for u in blob["top_users"]] == ["alice", "bob"]
    assert blob["top_cities"] == [{"state": "CA", "city": "Fresno", "messages": 3}]
    assert blob["states"] == [{"state": "TX", "messages": 4}]
    assert blob["totals"]["states"] == 2
    assert len(blob["timeline"]) == settings.STATS_TIMELINE_MINUTES


def test_the_blob_of_an_empty_database_is_all_zeros(minute):
    blob = selectors.stats_blob_build(minute)

    assert blob["totals"] == {"messages": 0, "users": 0, "cities": 0, "states": 0}
    assert blob["newest_message_at"] is None
    assert blob["states"] == blob["top_cities"] == blob["top_users"] == []
    assert {point["messages"] for point in blob["timeline"]} == {0}


def test_building_the_blob_reads_only_rollups(minute):
    store(known_messages(minute))

    with CaptureQueriesContext(connection) as queries:
        selectors.stats_blob_build(minute)

    tables = ("stats_totals", "stats_state_count", "stats_city_count", "stats_top_user", "stats_minute_count")
    assert len(queries.captured_queries) <= 6
    for query in queries.captured_queries:
        sql = query["sql"]
        assert '"message"' not in sql and " message " not in sql, sql
        assert sql.startswith("SET TRANSACTION") or any(table in sql for table in tables), sql


def _plan(queryset) -> str:
    return queryset.explain()


def test_every_blob_query_is_an_index_scan_on_large_rollups(minute):
    """At scale (many users, cities and minutes) the top lists and the timeline read a few index
    entries, never a whole table: that is what makes publishing cost the same at any size."""
    with connection.cursor() as cursor:
        # The leaderboard the top users come from holds STATS_TOP_USERS_KEPT rows at most.
        cursor.execute("INSERT INTO stats_top_user SELECT 'user' || i, i % 700 + 1 FROM generate_series(1, 1000) i")
        cursor.execute(
            "INSERT INTO stats_city_count"
            " SELECT 'S' || i % 50, 'city' || i, i % 700 + 1 FROM generate_series(1, 50000) i"
        )
        cursor.execute("INSERT INTO stats_state_count SELECT 'S' || i, i FROM generate_series(1, 5000) i")
        cursor.execute(
            "INSERT INTO stats_minute_count SELECT %s - i * interval '1 minute', 10 FROM generate_series(0, 200000) i",
            [minute.replace(second=0)],
        )
        cursor.execute("ANALYZE stats_top_user, stats_city_count, stats_state_count, stats_minute_count")
    first = minute.replace(second=0) - timedelta(minutes=59)
    plans = {
        "users": _plan(TopUser.objects.order_by("-messages", "username")[:10]),
        "cities": _plan(CityCount.objects.order_by("-messages", "state", "city")[:10]),
        "states": _plan(StateCount.objects.order_by("-messages", "state")[:100]),
        "timeline": _plan(MinuteCount.objects.filter(minute__gte=first, minute__lte=minute).order_by("minute")),
    }
    for name, plan in plans.items():
        assert "Seq Scan" not in plan and "Sort" not in plan, f"{name}: {plan}"
        assert "Index" in plan, f"{name}: {plan}"
