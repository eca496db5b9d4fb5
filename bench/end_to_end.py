"""End to end: web and one ingest worker on this machine. The peak accept rate is measured
with the worker storing (on two cores it competes with the web processes for CPU); then a
steady single-message load runs at a fraction of that peak, and we look at the backlog and at
the delay between a message's acceptance and its storage."""

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import redis

from bench import env
from bench.http import MESSAGE, wrk_rate

STREAM = "messy-bench:stream:messages"

_DELAYS = """
SELECT count(*),
    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - accepted_at)), 0),
    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - accepted_at)), 0)
FROM message
"""


def _sql(statement: str) -> tuple[Any, ...]:
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=env.DATABASE)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return (cursor.fetchone() or ()) if cursor.description else ()
    finally:
        connection.close()


def _drained(staging: redis.Redis, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while staging.xlen(STREAM) and time.monotonic() < deadline:
        time.sleep(0.5)
    return int(staging.xlen(STREAM))


def run(report: Callable[[str, str], None], base_url: str, load_fraction: float, seconds: int) -> None:
    env.redis_reset()
    _sql("TRUNCATE message")
    staging = redis.Redis(host="127.0.0.1", port=6379, db=6)
    worker = env.Process(["./runworker.sh", "ingest"])
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
        _sql("TRUNCATE message")
        threading.Thread(target=sample, daemon=True).start()
        clients = 32
        load = subprocess.run(
            [
                "hey",
                "-z",
                f"{seconds}s",
                "-c",
                str(clients),
                "-q",
                f"{max(1.0, rate / clients):.0f}",
                "-m",
                "POST",
                "-T",
                "application/json",
                "-d",
                json.dumps(MESSAGE),
                f"{base_url}/message/write/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        achieved = float(load.split("Requests/sec:")[1].split()[0])
        left = _drained(staging)
    finally:
        stop.set()
        worker.stop()
    stored, p50, p99 = _sql(_DELAYS)
    third = max(1, len(backlog) // 3)
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
