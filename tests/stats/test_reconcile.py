import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from stats.selectors import rollups_differences
from tests.stats.conftest import payload, store
from tests.stats.test_rollups import _drain, run_in_processes, worker_batches

pytestmark = pytest.mark.django_db(transaction=True)


def drift() -> None:
    """Rollups that no longer match the messages: one count off, one row missing, one extra."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE stats_user_count SET messages = messages + 1 WHERE username = 'alice'")
        cursor.execute("DELETE FROM stats_city_count WHERE city = 'Miami'")
        cursor.execute("INSERT INTO stats_state_count VALUES ('ZZ', 3)")
        cursor.execute("UPDATE stats_totals SET users = 7")


def reconcile(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "stats_reconcile", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_reconcile_exits_zero_when_the_rollups_match_a_recount(minute, subprocess_env):
    store([payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)])

    result = reconcile(env=subprocess_env)

    assert result.returncode == 0, result.stderr
    assert "Rollups match a recount" in result.stdout


def test_reconcile_prints_every_difference_and_exits_non_zero(minute, subprocess_env):
    store([payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)])
    drift()

    result = reconcile(env=subprocess_env)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "stats_state_count state='ZZ': expected None, found 3",
        "stats_city_count state='FL' city='Miami': expected 1, found None",
        "stats_user_count username='alice': expected 1, found 2",
        "stats_totals users: expected 2, found 7",
    ]
    assert "4 differences; run with --fix" in result.stderr


def test_reconcile_fix_repairs_every_difference(minute, subprocess_env):
    store([payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)])
    drift()

    fixed = reconcile("--fix", env=subprocess_env)
    after = reconcile(env=subprocess_env)

    assert fixed.returncode == 0, fixed.stderr
    assert "Repaired 4 differences" in fixed.stdout
    assert after.returncode == 0, after.stdout
    assert rollups_differences() == []


def _fix(start) -> int:
    start.wait(60)
    out = StringIO()
    call_command("stats_reconcile", "--fix", stdout=out)
    return len(out.getvalue().splitlines())


def test_reconcile_fix_while_workers_drain_leaves_rollups_equal_to_a_recount(minute):
    store([payload("alice", "Austin", "TX", minute), payload("bob", "Miami", "FL", minute)])
    drift()
    batches = worker_batches(minute)

    run_in_processes([(_drain, (worker,)) for worker in batches] + [(_fix, ())])

    assert rollups_differences() == []
