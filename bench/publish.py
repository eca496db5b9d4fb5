"""Stats publish time (build the blob from the rollups and PUT it to S3) at 10 thousand and at
10 million stored messages, and their ratio, on a database, Redis namespace and local S3 of
its own; the messages are generated in SQL and the rollups recounted from them.

  python -m bench.publish      alone (also run by `make bench`)
Documented in docs/benchmarks.md.
"""

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench import results
from tests.harness import BENCH, ROOT, S3Server, database_create, database_drop, tables_truncate_sql

# The benchmark's namespace, with a database of its own, dropped after the run.
PUBLISH = replace(
    BENCH,
    database="messy_bench_publish",
    key_prefix="messy-bench-publish",
    # Loading ten million rows is one long statement.
    extra={**BENCH.extra, "POSTGRES_STATEMENT_TIMEOUT_MS": "0"},
)
SIZES = (10_000, 10_000_000)
RUNS = 15
WARM_UP_RUNS = 3

# One user per hundred messages, 50 states with 40 cities each, spread over the last 30
# days: at 10 million that is 100,000 users, 2,000 cities and 43,200 minutes of rollup rows.
# Ids are time-ordered like the service's UUIDv7, so the primary key grows at its right edge.
_GENERATE = """
INSERT INTO message (id, username, city, state, message, accepted_at, stored_at)
SELECT
    lpad(to_hex(i), 32, '0')::uuid,
    'user' || (i * 7919 %% %(users)s),
    'city' || (i / 50 %% 40),
    'S' || (i %% 50),
    'benchmark message ' || i,
    now() - (%(count)s - i) * (30 * 86400.0 / %(count)s) * interval '1 second',
    now()
FROM generate_series(1::bigint, %(count)s) i
"""


def run(report: Callable[[str, str], None]) -> None:
    """Measure in a child process (Django, on the bench database) and report the figures."""
    s3 = S3Server().start()
    config = replace(PUBLISH, s3_endpoint=s3.endpoint)
    try:
        database_create(config)
        output = subprocess.run(
            [sys.executable, "-m", "bench.publish", "--measure"],
            cwd=ROOT,
            env=config.env(),
            stdout=subprocess.PIPE,
            text=True,
            check=True,
            timeout=900,
        ).stdout
    finally:
        database_drop(config)
        s3.close()
    figures = json.loads(output.strip().splitlines()[-1])
    small, large = (figures[str(size)] for size in SIZES)
    results.record("publish_small_s", small["median"])
    results.record("publish_large_s", large["median"])
    for size, figure in ((SIZES[0], small), (SIZES[1], large)):
        report(
            f"stats publish at {size:,} messages",
            f"{figure['median'] * 1000:.1f} ms median, {figure['min'] * 1000:.1f} ms best of {RUNS}"
            f" (build alone {figure['build_median'] * 1000:.1f} ms; data loaded in {figure['load_seconds']:.0f} s)",
        )
    report(
        "stats publish, 10 million / 10 thousand",
        f"{large['median'] / small['median']:.2f}x (target: under 0.5 s and under 2x)",
    )


def _load(count: int) -> float:
    """Replace the bench database's messages and rollups with `count` generated messages."""
    from django.db import connection

    from stats.services.reconcile import rollups_fix

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(tables_truncate_sql())
        # Not crash-safe, and it need not be: the database is dropped after the run.
        cursor.execute("ALTER TABLE message SET UNLOGGED")
        # Building the username indexes once afterwards is about twice as fast as updating
        # them row by row; the primary key stays (the ids arrive in its order anyway).
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'message' AND indexname <> %s",
            ["message_pkey"],
        )
        secondary = cursor.fetchall()
        for name, _ in secondary:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute(_GENERATE, {"count": count, "users": max(100, count // 100)})
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in secondary:
            cursor.execute(definition)
    rollups_fix()
    with connection.cursor() as cursor:
        # What autovacuum would have done by now: statistics, and the visibility map that
        # lets the top-N reads be index-only scans. (Publishing never reads the messages.)
        cursor.execute("VACUUM ANALYZE stats_state_count, stats_city_count, stats_user_count, stats_minute_count")
    return time.perf_counter() - started


def _time(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure() -> dict[str, dict[str, float]]:
    import django

    django.setup()
    from messages.models import Message
    from project.redis import redis_client
    from stats.selectors import published_marker_key, stats_blob_build
    from stats.services.publish import stats_publish

    figures = {}
    for size in SIZES:
        load_seconds = _load(size)
        assert Message.objects.count() == size
        # force: every run publishes (the once-a-minute claim would skip all but the first).
        for _ in range(WARM_UP_RUNS):
            stats_publish(force=True)
        publish = [_time(lambda: stats_publish(force=True)) for _ in range(RUNS)]
        build = [_time(stats_blob_build) for _ in range(RUNS)]
        assert stats_blob_build()["totals"]["messages"] == size
        figures[str(size)] = {
            "median": statistics.median(publish),
            "min": min(publish),
            "build_median": statistics.median(build),
            "load_seconds": load_seconds,
        }
    redis_client().delete(published_marker_key())
    return figures


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(json.dumps(measure()))
    else:

        def print_report(name: str, value: str) -> None:
            print(f"{name:<48} {value}", flush=True)

        run(print_report)
