"""Where a single write's CPU time goes inside its web process: the WSGI application called
directly (no server) for the no-op view and the lean write, then the write without its
memcached copy and without its Redis call, so the differences are what those calls cost.

Run by `./scripts/bench.sh --in-process`. Documented in docs/benchmarks.md.
"""

import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

REQUESTS = 4000
ROUNDS = 3


def _environ(path: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8001",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8001",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }


def main() -> None:
    from bench.http import MESSAGE
    from messages import copies, staging
    from project import deferred
    from project.wsgi import application
    from tests.harness import BENCH, redis_reset

    body = json.dumps(MESSAGE).encode()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        if not status.startswith("202"):
            raise RuntimeError(f"answered {status}")

    def cpu_per_request(path: str) -> float:
        best = float("inf")
        for _ in range(ROUNDS):
            redis_reset(BENCH)
            started = time.process_time()
            for _ in range(REQUESTS):
                b"".join(application(_environ(path, body), start_response))
            best = min(best, (time.process_time() - started) / REQUESTS)
        return best * 1e6

    for path in ("/message/noop/", "/message/write/"):  # warm up
        for _ in range(500):
            b"".join(application(_environ(path, body), start_response))
    noop = cpu_per_request("/message/noop/")
    write = cpu_per_request("/message/write/")
    deferred.enable()  # as runserver.sh's worker class does: copies go out COPIES_GROUP at a time
    grouped = cpu_per_request("/message/write/")
    deferred.flush_all()
    copies_store: Callable[..., None] = copies.copies_store
    stage: Callable[..., staging.StageOutcome] = staging.stage
    try:
        copies.copies_store = lambda *args, **kwargs: None
        without_copy = cpu_per_request("/message/write/")
        staged = staging.StageOutcome("staged", drain_needed=False, remaining=1, reset=1)
        staging.stage = lambda *args, **kwargs: staged
        without_calls = cpu_per_request("/message/write/")
    finally:
        copies.copies_store, staging.stage = copies_store, stage
    rows = [
        ("no-op Django view", noop),
        ("lean write, copies grouped (the web server)", grouped),
        ("lean write, each copy sent alone", write),
        ("  of which the memcached copy, grouped", grouped - without_copy),
        ("  of which the memcached copy, alone", write - without_copy),
        ("  of which the Redis call (the stage script)", without_copy - without_calls),
        ("  of which everything else", without_calls),
    ]
    for name, microseconds in rows:
        print(f"{name:<48} {microseconds:5.1f} µs of this process's CPU per request")


if __name__ == "__main__":
    main()
