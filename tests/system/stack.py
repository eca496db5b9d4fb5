"""Real Messy processes for end-to-end and fault tests: web (gunicorn), workers, beat and a
private memcached, all started through the project's own run scripts, against a database of
their own (migrated from scratch) and Redis databases of their own."""

import concurrent.futures
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis

from tests.conftest import ROOT, free_port, wait_for_port

DATABASE = "messy_system_test"
REDIS_STAGING_URL = "redis://127.0.0.1:6379/8"
REDIS_BROKER_URL = "redis://127.0.0.1:6379/9"
KEY_PREFIX = "messy-sys"


def database_create(port: int = 5432) -> None:
    """A fresh database, migrated by the project's own manage.py (schedules included)."""
    admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=base_env(memcached_port=11211, s3_endpoint="http://127.0.0.1:1", postgres_port=port),
        check=True,
        timeout=180,
    )


def base_env(memcached_port: int, s3_endpoint: str, postgres_port: int = 5432) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "REDIS_", "MESSY_", "CELERY_"))}
    env.update(
        MESSY_NO_LOCAL_SH="1",
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_SECRET_KEY="system-test-only",
        POSTGRES_DB=DATABASE,
        POSTGRES_PORT=str(postgres_port),
        REDIS_URL=REDIS_STAGING_URL,
        CELERY_BROKER_URL=REDIS_BROKER_URL,
        REDIS_KEY_PREFIX=KEY_PREFIX,
        MEMCACHED_SERVERS=f"127.0.0.1:{memcached_port}",
        MEMCACHED_KEY_PREFIX=KEY_PREFIX,
        S3_ENDPOINT_URL=s3_endpoint,
        S3_BUCKET="messy-system-test",
        # Fast recovery, so a test sees a dead worker's batch taken over within seconds.
        MESSY_DRAIN_RECLAIM_IDLE_MS="3000",
        MESSY_DRAIN_SLOT_TTL="4",
        MESSY_DRAIN_BATCH_SIZE="500",
        WEB_ACCESS_LOG="off",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Stack:
    logs: Path
    s3_endpoint: str
    memcached_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    postgres_port: int = 5432
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.memcached_port, self.s3_endpoint, self.postgres_port)

    def _start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (lives as long as the process)
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes its children too
        )
        self.processes[name] = process
        return process

    def start_memcached(self) -> None:
        self._start("memcached", ["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(self.memcached_port)])
        wait_for_port(self.memcached_port)

    def start_web(self, processes: int = 2) -> None:
        self._start(
            "web", ["./runserver.sh"], {"MESSY_BIND": f"127.0.0.1:{self.web_port}", "WEB_PROCESSES": str(processes)}
        )
        wait_for_port(self.web_port, timeout=30)

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> subprocess.Popen:
        process = self._start(name, ["./runworker.sh", "ingest"], {"WORKER_INGEST_CONCURRENCY": str(concurrency)})
        return process

    def start_beat(self, name: str = "beat") -> None:
        self._start(name, ["./runbeat.sh"])

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, sig)
        process.wait(30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in list(self.processes.items()):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
            self.processes.pop(name)

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

    def db(self) -> psycopg2.extensions.connection:
        connection = psycopg2.connect(host="127.0.0.1", port=self.postgres_port, user="postgres", dbname=DATABASE)
        connection.autocommit = True
        return connection

    def staging_redis(self) -> redis.Redis:
        return redis.Redis.from_url(REDIS_STAGING_URL)


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

    def _as_postgres(self, args: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; "immediate" is a crash as far as clients are concerned."""
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
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
        assert not extra, f"{len(extra)} stored messages were never accepted"
        assert_rollups_match(cursor)
    connection.close()
    assert stack.staging_redis().xlen(f"{KEY_PREFIX}:stream:messages") == 0


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
    for name, (recount_sql, rollup_sql) in _RECOUNTS.items():
        cursor.execute(recount_sql)
        recount = dict(cursor.fetchall())
        cursor.execute(rollup_sql)
        rollup = dict(cursor.fetchall())
        assert rollup == recount, f"rollup {name} differs from a recount"
