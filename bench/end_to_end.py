"""End to end: web and one ingest worker on this machine. The peak accept rate is measured
with the worker storing (on two cores it competes with the web processes for CPU); then a
steady single-message load runs at a fraction of that peak, and we look at the backlog and at
the delay between a message's acceptance and its storage."""

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from bench import results
from bench.http import MESSAGE, hey_latency, wrk_rate
from tests.harness import BENCH, ProcessGroup, db_connect, redis_admin, redis_reset, tables_reset

STREAM = f"{BENCH.key_prefix}:{{s0}}:stream"  # shard 0's, the only one by default

_DELAYS = """
SELECT count(*),
    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - accepted_at)), 0),
    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - accepted_at)), 0)
FROM message
"""


def _delays() -> tuple[Any, ...]:
    connection = db_connect(BENCH)
    try:
        with connection.cursor() as cursor:
            cursor.execute(_DELAYS)
            return cursor.fetchone() or ()
    finally:
        connection.close()


def _drained(staging: redis.Redis, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while staging.xlen(STREAM) and time.monotonic() < deadline:
        time.sleep(0.5)
    return int(staging.xlen(STREAM))


def run(
    report: Callable[[str, str], None], processes: ProcessGroup, base_url: str, load_fraction: float, seconds: int
) -> None:
    """Against the web process already in `processes`, which gets the worker too."""
    redis_reset(BENCH)
    tables_reset(BENCH)
    staging = redis_admin(BENCH.staging_url)
    worker = processes.worker("worker", role="ingest")
    backlog: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            backlog.append(int(staging.xlen(STREAM)))

    try:
        time.sleep(5)  # the worker connects and is ready
        peak, _ = wrk_rate(f"{base_url}/message/write/", json.dumps(MESSAGE), 8)
        rate = load_fraction * peak
        _drained(staging)
        tables_reset(BENCH)
        threading.Thread(target=sample, daemon=True).start()
        # Many clients at a fixed total rate; latency comes from the table, not from hey.
        achieved = hey_latency(f"{base_url}/message/write/", json.dumps(MESSAGE), rate, seconds, workers=32)["rate"]
        left = _drained(staging)
    finally:
        stop.set()
        worker.stop()
    stored, p50, p99 = _delays()
    third = max(1, len(backlog) // 3)
    results.record("end_to_end_p50_s", p50)
    results.record("end_to_end_p99_s", p99)
    results.record("end_to_end_backlog_max", max(backlog, default=0))
    results.record("end_to_end_backlog_first_third", sum(backlog[:third]) / third)
    results.record("end_to_end_backlog_last_third", sum(backlog[-third:]) / third)
    report("end to end: web + one ingest worker, peak", f"{peak:,.0f} req/s accepted while the worker stores them")
    report(
        f"  steady load at {load_fraction:.0%} of that peak",
        f"{achieved:,.0f} req/s for {seconds} s (asked {rate:,.0f}); {stored:,} stored, {left} left staged",
    )
    report("  accept-to-stored delay", f"p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms (target: p99 under 2 s)")
    report(
        "  backlog (staged, not yet stored)",
        f"max {max(backlog, default=0):,}; mean over first third {sum(backlog[:third]) / third:,.0f},"
        f" over last third {sum(backlog[-third:]) / third:,.0f} (bounded if it does not grow)",
    )
