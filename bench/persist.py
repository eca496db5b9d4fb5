"""Persist rate of one worker process: stage N messages, then drain them in this one process
through the same service a Celery worker runs (COPY, idempotent insert, rollups), beside the
COPY ceiling of the same process (the same rows COPYed into a table like message).

Run inside the bench environment: `python -m bench.persist N`; prints one JSON line.
Documented in docs/benchmarks.md.
"""

import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any


def _payloads(count: int, ids: Any) -> list[dict[str, Any]]:
    accepted_at = int(time.time() * 1000)
    return [
        {
            "id": ids.message_id_text(),
            # Realistic spread: 20,000 users, 500 cities in 50 states.
            "username": f"user{i * 7919 % 20000}",
            "city": f"city{i % 500}",
            "state": f"S{i % 50}",
            "message": f"benchmark message {i} " + "x" * 40,
            "accepted_at": accepted_at + i // 1000,
        }
        for i in range(count)
    ]


def copy_ceiling(payloads: list[dict[str, Any]], batch_size: int) -> float:
    """Rows per second COPYed into a table shaped like message (see the module's docstring)."""
    from django.db import connection, transaction

    stored_at = datetime.now(UTC).isoformat()
    lines = [
        f"{p['id']}\t{p['username']}\t{p['city']}\t{p['state']}\t{p['message']}\t"
        f"{datetime.fromtimestamp(p['accepted_at'] / 1000, UTC).isoformat()}\t{stored_at}\t\\N\n"
        for p in payloads
    ]
    batches = [io.StringIO("".join(lines[i : i + batch_size])) for i in range(0, len(lines), batch_size)]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_copy_ceiling")
        cursor.execute("CREATE TABLE bench_copy_ceiling (LIKE message INCLUDING ALL)")
        started = time.perf_counter()
        for batch in batches:
            with transaction.atomic():
                cursor.cursor.copy_expert("COPY bench_copy_ceiling FROM STDIN", batch)
        elapsed = time.perf_counter() - started
        cursor.execute("DROP TABLE bench_copy_ceiling")
    return len(lines) / elapsed


def main(count: int) -> None:
    import django

    django.setup()
    import orjson
    from django.conf import settings

    from messages import ids, services, staging
    from stats.services.rollups import rollups_fold

    payloads = _payloads(count, ids)
    ceiling = copy_ceiling(payloads, settings.MESSY_DRAIN_BATCH_SIZE)

    client = staging.redis_client()
    staging.group_ensure(staging.shards()[0])
    pipe = client.pipeline(transaction=False)
    for i, payload in enumerate(payloads):
        # As the write path stages them: orjson's compact document under "m".
        pipe.xadd(staging.shards()[0].stream, {"m": orjson.dumps(payload)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    started = time.perf_counter()
    stored = 0
    while staging.backlog():
        stored += services.messages_drain(staging.shards()[0], slot=0).stored
    rollups_fold()  # the counts still pending are part of the work
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "stored": stored,
                "seconds": elapsed,
                "rate": stored / elapsed,
                "copy_ceiling": ceiling,
                "batch_size": settings.MESSY_DRAIN_BATCH_SIZE,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
