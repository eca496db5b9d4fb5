"""Real Messy processes for end-to-end and fault tests: web (gunicorn), workers, beat and a
private memcached, all started through the project's own run scripts (tests/harness.py),
against a database of their own (migrated from scratch) and Redis databases of their own."""

import concurrent.futures
import http.client
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg2
import redis

from stats.services.rollups import FOLD_LOCK, rollups_fold_locked
from tests.harness import (
    ROOT,
    SYSTEM,
    VENV_BIN,
    ProcessGroup,
    RunConfig,
    db_connect,
    free_port,
    redis_admin,
    wait_for_port,
)

KEY_PREFIX = SYSTEM.key_prefix


class Stack(ProcessGroup):
    """The system tests' processes (SYSTEM's namespace, a private memcached, the session's S3
    server) and a client of them."""

    def __init__(self, logs: Path, s3_endpoint: str) -> None:
        self.memcached_port = free_port()
        self.web_port = free_port()
        self.config: RunConfig = replace(
            SYSTEM, s3_endpoint=s3_endpoint, memcached_servers=f"127.0.0.1:{self.memcached_port}"
        )
        super().__init__(self.config.env(), logs)

    def postgres_use(self, port: int) -> None:
        """Processes started from now on use the PostgreSQL server on `port`."""
        self.config = replace(self.config, postgres_port=port)
        self.env = self.config.env()

    def start_memcached(self) -> None:
        self.memcached(self.memcached_port)

    def start_web(self, processes: int = 2) -> None:
        self.web(self.web_port, processes)

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> None:
        self.worker(name, role="ingest", concurrency=concurrency)

    def start_beat(self, name: str = "beat") -> None:
        self.beat(name)

    def start_flower(self) -> None:
        """Flower (./scripts/flower.sh) on a free port of 127.0.0.1; a front door started after
        it serves it at /flower/."""
        self.flower_port = free_port()
        self.env = {**self.env, "FLOWER_PORT": str(self.flower_port)}
        self.start("flower", ["./scripts/flower.sh"])
        wait_for_port(self.flower_port, timeout=30)

    def start_front(self, name: str = "front", **extra_env: str) -> str:
        """The front door (./scripts/front.sh: nginx) in front of the web server, through its Unix
        socket as make run connects them; returns its URL."""
        self.front_port = free_port()
        run_dir = Path(tempfile.mkdtemp(prefix="messy-front-"))
        self.front(self.front_port, self.web_port, run_dir, name, through_socket=self.sockets.get("web"), **extra_env)
        return f"http://127.0.0.1:{self.front_port}"

    # --- client side ---------------------------------------------------------------------

    def post(self, path: str, body: object) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def api_token(self, scope: str) -> str:
        """A new jobs API token with `scope` (manage.py api_token create, as an operator makes one)."""
        return subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "api_token", "create", f"test-{time.time_ns()}", "--scope", scope],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()

    def db(self) -> psycopg2.extensions.connection:
        return db_connect(self.config)

    def staging_redis(self) -> redis.Redis:
        """The staging Redis the processes started from now on use (a test may point `env`
        at a Redis server of its own)."""
        return redis_admin(self.env["REDIS_URL"])


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory), so a test can
    stop and start it without touching the machine's server."""

    BIN = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="messy-pg-"))
        shutil.chown(self.directory, "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_postgres(
            [str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )

    def _as_postgres(self, args: list[str], check: bool = True) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    def stop(self, mode: str = "immediate", check: bool = True) -> None:
        """Stop the server; "immediate" is a crash as far as clients are concerned."""
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check)

    def remove(self) -> None:
        self.stop(check=False)  # it may be stopped already
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class LoadResult:
    accepted: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def message_body(i: int) -> dict[str, str]:
    # Few users, cities and states, so concurrent drains update the same rollup rows.
    return {
        "username": f"user{i % 37}",
        "city": f"city{i % 11}",
        "state": f"S{i % 5}",
        "message": f"message number {i}",
    }


def load_run(
    stack: Stack,
    singles: int,
    batches: int,
    batch_size: int = 200,
    threads: int = 12,
    during: Callable[[], None] | None = None,
) -> LoadResult:
    """Post `singles` single messages and `batches` batches concurrently; `during` runs in the
    middle of the load (a fault to inject). Returns every accepted id."""
    result = LoadResult()

    def single(i: int) -> None:
        status, body = stack.post("/message/write/", message_body(i))
        result.count(status)
        if status == 202:
            result.accepted.append(body["id"])

    def batch(i: int) -> None:
        items = [message_body(i * batch_size + j) for j in range(batch_size)]
        status, body = stack.post("/message/batch/", items)
        result.count(status)
        if status == 202:
            result.accepted.extend(r["id"] for r in body["results"] if r["status"] == "accepted")

    # Batches spread evenly among the singles, so both kinds are in flight together.
    jobs: list[tuple[Callable[[int], None], int]] = [(single, i) for i in range(singles)]
    step = max(1, singles // max(1, batches))
    for i in range(batches):
        jobs.insert(min(len(jobs), i * (step + 1)), (batch, i))
    # The fault starts once half the requests are answered, while the rest keep coming.
    halfway = threading.Event()
    answered = itertools.count(1)

    def run(job: Callable[[int], None], i: int) -> None:
        job(i)
        if next(answered) == len(jobs) // 2:
            halfway.set()

    def inject_fault() -> None:
        if during and halfway.wait(300):
            during()

    with concurrent.futures.ThreadPoolExecutor(threads + 1) as pool:
        fault = pool.submit(inject_fault)
        futures = [pool.submit(run, job, i) for job, i in jobs]
        for future in futures:
            future.result()
        halfway.set()
        fault.result()
    return result


def wait_until_stored(stack: Stack, expected: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    with stack.db() as connection, connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT count(*) FROM message")
            (stored,) = cursor.fetchone() or (0,)
            if stored >= expected or time.monotonic() > deadline:
                return stored
            time.sleep(0.5)


def assert_stored_exactly_once(stack: Stack, accepted: list[str]) -> None:
    """Every accepted id is in the table, nothing else is, and every rollup equals a recount."""
    assert len(set(accepted)) == len(accepted), "the service handed out an id twice"
    stored = wait_until_stored(stack, len(accepted))
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text FROM message")
        stored_ids = {row[0] for row in cursor.fetchall()}
        assert stored == len(stored_ids)
        missing = set(accepted) - stored_ids
        extra = stored_ids - set(accepted)
        assert not missing, f"{len(missing)} accepted messages were never stored"
        assert not extra, f"{len(extra)} stored messages were never accepted: {_messages(cursor, extra)}"
        assert_rollups_match(cursor)
    connection.close()
    # Nothing is left staged. A drain deletes a batch's entries after its commit, on its Redis
    # thread, so the last deletion may land a moment after the last rows show.
    staging, deadline = stack.staging_redis(), time.monotonic() + 10
    while staging.xlen(f"{KEY_PREFIX}:{{s0}}:stream") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert staging.xlen(f"{KEY_PREFIX}:{{s0}}:stream") == 0


def _messages(cursor, ids: set[str], most: int = 5) -> list[tuple]:
    """A few stored messages, to tell where unexpected ones came from."""
    cursor.execute(
        "SELECT id, username, message, accepted_at FROM message WHERE id::text = ANY(%s)", [sorted(ids)[:most]]
    )
    return cursor.fetchall()


_RECOUNTS = {
    "per state": (
        "SELECT state, count(*) FROM message GROUP BY state",
        "SELECT state, messages FROM stats_state_count",
    ),
    "per city": (
        "SELECT state || '/' || city, count(*) FROM message GROUP BY state, city",
        "SELECT state || '/' || city, messages FROM stats_city_count",
    ),
    "per user": (
        "SELECT username, count(*) FROM message GROUP BY username",
        "SELECT username, messages FROM stats_user_count",
    ),
    "per minute": (
        "SELECT date_trunc('minute', accepted_at)::text, count(*) FROM message GROUP BY 1",
        "SELECT minute::text, messages FROM stats_minute_count",
    ),
    "totals": (
        """SELECT 'all', count(*) || '/' || count(DISTINCT username) || '/'
           || count(DISTINCT (state, city)) || '/' || count(DISTINCT state) FROM message""",
        "SELECT 'all', messages || '/' || users || '/' || cities || '/' || states FROM stats_totals",
    ),
}


def assert_rollups_match(cursor) -> None:
    # Drains may leave a full batch's counts pending for the next fold (docs/scaling.md): fold
    # them first, under the fold's lock, as the publish and stats_reconcile do.
    # One transaction (the connection may be in autocommit): the fold's temporary table lives
    # until its commit.
    cursor.execute("BEGIN")
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
    rollups_fold_locked(cursor)
    cursor.execute("COMMIT")
    for name, (recount_sql, rollup_sql) in _RECOUNTS.items():
        cursor.execute(recount_sql)
        recount = dict(cursor.fetchall())
        cursor.execute(rollup_sql)
        rollup = dict(cursor.fetchall())
        assert rollup == recount, f"rollup {name} differs from a recount"
