"""Persist rate of one worker process: stage N messages, then drain them in this one process
through the same service a Celery worker runs (COPY, idempotent insert, rollups).

Run inside the bench environment: `python -m bench.persist N`."""

import json
import os
import sys
import time


def main(count: int) -> None:
    import django

    django.setup()
    from messages import ids, services, staging

    client = staging.redis_client()
    staging.group_ensure()
    accepted_at = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        payload = {
            "id": ids.message_id_text(),
            # Realistic spread: 20,000 users, 500 cities in 50 states.
            "username": f"user{i * 7919 % 20000}",
            "city": f"city{i % 500}",
            "state": f"S{i % 50}",
            "message": f"benchmark message {i} " + "x" * 40,
            "accepted_at": accepted_at + i // 1000,
        }
        pipe.xadd(staging.stream_key(), {"m": json.dumps(payload)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    started = time.perf_counter()
    stored = 0
    while staging.backlog():
        stored += services.messages_drain(slot=0).stored
    elapsed = time.perf_counter() - started
    print(json.dumps({"stored": stored, "seconds": elapsed, "rate": stored / elapsed}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
