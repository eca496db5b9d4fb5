"""/readyz (can this process accept a write?) and /status (every component, for operators),
and the staging Redis's durability check, against real servers: PostgreSQL and memcached made
unreachable, and Redis servers of the test's own (one filled to its memory limit, one started
with the project's deploy/redis.conf)."""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from django.test import Client

from project.redis import redis_client_reset, redis_durability_problems, redis_durability_warn
from project.storage import bucket_ensure
from tests.conftest import free_port
from tests.harness import ROOT, redis_user_url, wait_for_port

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@contextmanager
def redis_server(*options: str, data_dir: Path | None = None) -> Iterator[int]:
    """A redis-server of this test's own on a free port, stopped afterwards: with these options,
    or, given a data directory, as scripts/redis.sh starts the project's staging Redis."""
    port = free_port()
    if data_dir is None:
        # Nothing on disk (it would land in the working directory): options may say otherwise.
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", *options]
        env = dict(os.environ)
    else:
        args = [str(ROOT / "scripts" / "redis.sh"), "staging", *options]
        env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "REDIS_DATA_DIR": str(data_dir),
            "REDIS_BIND": "127.0.0.1",
            "MESSY_NO_LOCAL_SH": "1",
        }
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        # Ours, not another process that took the free port first (ours would have exited).
        assert process.poll() is None, "redis-server did not start"
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def staging_redis_at(settings: Any, port: int) -> Iterator[None]:
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_TIMEOUT = 0.5
    redis_client_reset()
    try:
        yield
    finally:
        redis_client_reset()


@contextmanager
def database_unreachable() -> Iterator[None]:
    """PostgreSQL unreachable: the connection pointed at a port nothing listens on (as in
    tests/test_api_schema.py)."""
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved


def memcached_unreachable(settings: Any) -> None:
    caches = settings.CACHES
    settings.CACHES = {**caches, "default": {**caches["default"], "LOCATION": [f"127.0.0.1:{free_port()}"]}}


def ready() -> Any:
    return Client().get("/readyz")


# --- readiness ---------------------------------------------------------------------------------


def test_it_is_ready_when_the_staging_redis_takes_writes():
    response = ready()
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok"}}


@pytest.mark.django_db(transaction=True)
def test_it_stays_ready_with_postgresql_unreachable():
    with database_unreachable():
        assert ready().status_code == 200


def test_it_stays_ready_with_memcached_stopped(settings):
    memcached_unreachable(settings)
    assert ready().status_code == 200


def test_it_is_not_ready_when_the_staging_redis_is_unreachable(settings):
    with staging_redis_at(settings, free_port()):
        response = ready()
    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.MESSY_RETRY_AFTER_SECONDS)
    assert response.json() == {"status": "not_ready", "checks": {"redis": "unavailable: ConnectionError"}}


def test_a_full_staging_redis_keeps_the_host_ready_and_degrades_status(settings):
    """Every web host would get the same refusal from a full Redis: taking them all out of
    rotation would turn "writes get 503 staging_full" into an outage of every endpoint."""
    options = ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--save", "", "--appendonly", "no")
    with redis_server(*options) as port, staging_redis_at(settings, port):
        assert ready().status_code == 200
        filler = redis.Redis(port=port)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for number in range(1000):
                filler.set(f"filler:{number}", b"x" * 64 * 1024)
        # Freed buffers can bring it back just under the limit for a small write: pin the
        # limit below what it holds, so every write is refused from now on.
        filler.config_set("maxmemory", filler.info("memory")["used_memory"] // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            filler.set("probe", b"1")
        response = ready()
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"redis": "ok"}}
        report = status()
        assert report["degraded"] is True
        assert report["components"]["redis"]["status"] == "unavailable: OutOfMemoryError"


def test_it_is_not_ready_on_a_read_only_replica(settings):
    with (
        redis_server() as primary,
        redis_server("--replicaof", "127.0.0.1", str(primary)) as replica,
        staging_redis_at(settings, replica),
    ):
        response = ready()
    assert response.status_code == 503
    assert response.json()["checks"] == {"redis": "unavailable: ReadOnlyError"}


# --- status ------------------------------------------------------------------------------------


def status() -> dict[str, Any]:
    response = Client().get("/status")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    return json.loads(response.content)


@pytest.mark.django_db(transaction=True)
def test_status_reports_every_component_ok_with_the_backlog(s3_server):
    bucket_ensure()
    assert Client().post("/message/write/", GOOD).status_code == 202
    report = status()
    components = report["components"]
    assert {name: c["status"] for name, c in components.items()} == {
        "postgres": "ok",
        "redis": "ok",
        "memcached": "ok",
        "s3": "ok",
        "broker": "ok",
        "staging": "ok",
        "jobs": "ok",
    }
    assert report["degraded"] is False
    assert components["staging"]["backlog"] == 1
    assert 0 <= components["staging"]["oldest_age_seconds"] < 60
    assert components["staging"]["dead_letters"] == 0
    assert components["staging"]["drain_lag_seconds"] >= 0
    assert components["jobs"] == {"status": "ok", "queued": 0, "running": 0}
    assert list(components["memcached"]["servers"].values()) == ["ok"]
    assert isinstance(components["redis"]["durability_problems"], list)


@pytest.mark.django_db(transaction=True)
def test_status_reports_an_empty_backlog_without_an_age(s3_server):
    staging = status()["components"]["staging"]
    assert (staging["backlog"], staging["oldest_age_seconds"]) == (0, None)


@pytest.mark.django_db(transaction=True)
def test_status_names_each_component_that_is_down_and_still_answers_200(settings, s3_server):
    memcached_unreachable(settings)
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    with database_unreachable():
        report = status()
    components = report["components"]
    assert report["degraded"] is True
    assert components["postgres"]["status"] == "unavailable: OperationalError"
    assert components["jobs"]["status"] == "unavailable: OperationalError"
    assert components["memcached"]["status"] == "unavailable: ConnectionRefusedError"
    assert list(components["memcached"]["servers"].values()) == ["unavailable: ConnectionRefusedError"]
    assert components["broker"]["status"] == "unavailable: ConnectionError"
    # what a write needs is still there
    assert components["redis"]["status"] == "ok"
    assert components["staging"]["status"] == "ok"


def test_status_reports_the_staging_redis_refusing_writes(settings):
    with staging_redis_at(settings, free_port()):
        components = status()["components"]
    assert components["redis"]["status"] == "unavailable: ConnectionError"
    assert components["staging"]["status"] == "unavailable: ConnectionError"


def test_status_reports_s3_unreachable(settings):
    from project.storage import s3_probe_client

    settings.S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    s3_probe_client.cache_clear()
    try:
        components = status()["components"]
    finally:
        s3_probe_client.cache_clear()
    assert components["s3"]["status"] == "unavailable: EndpointConnectionError"


@contextmanager
def s3_that_hangs(settings: Any) -> Iterator[None]:
    """S3 at a socket that takes connections and never answers (a hung S3 server)."""
    from project.storage import s3_probe_client

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes the handshakes; nobody ever reads
    settings.S3_ENDPOINT_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    s3_probe_client.cache_clear()
    try:
        yield
    finally:
        s3_probe_client.cache_clear()
        listener.close()


def timed_status() -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    report = status()
    return time.monotonic() - started, report


def test_status_with_s3_hanging_answers_within_about_a_second_and_names_it(settings):
    with s3_that_hangs(settings):
        first, report = timed_status()
        second, again = timed_status()  # the first S3 probe still hangs: not started twice

    assert first < 1.2 and second < 1.2, (first, second)
    assert report["components"]["s3"]["status"] == again["components"]["s3"]["status"] == "unavailable: TimeoutError"
    assert report["components"]["redis"]["status"] == "ok", "the other probes ran meanwhile"
    assert report["degraded"] is True


def test_status_reuses_its_report_for_a_few_seconds(settings):
    settings.MESSY_STATUS_CACHE_SECONDS = 0.5
    first = status()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    assert status() == first, "a burst of calls probes once"
    time.sleep(0.6)
    assert status()["components"]["broker"]["status"] == "unavailable: ConnectionError"


# --- durability of the staging Redis ----------------------------------------------------------


def test_the_machine_redis_without_an_append_only_file_is_reported():
    problems = redis_durability_problems(redis.Redis(host="127.0.0.1", port=6379))
    assert any("appendonly yes" in problem for problem in problems), problems


def test_an_evicting_unbounded_redis_is_reported():
    with redis_server("--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no") as port:
        problems = redis_durability_problems(redis.Redis(port=port))
    assert len(problems) == 3, problems
    assert any("maxmemory-policy noeviction" in problem for problem in problems)
    assert any("maxmemory is 0" in problem for problem in problems)


def test_the_projects_own_redis_configuration_has_no_problem(tmp_path: Path):
    with redis_server(data_dir=tmp_path) as port:
        # As the workers' user: INFO is among what it may run.
        assert redis_durability_problems(redis.Redis.from_url(redis_user_url(f"redis://127.0.0.1:{port}/0"))) == []


def test_a_process_start_logs_each_problem_at_error_and_never_fails(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:6379/4"
    with caplog.at_level("ERROR", logger="project.redis"):
        problems = redis_durability_warn()
    assert problems
    assert [r.levelname for r in caplog.records if "NOT DURABLE" in r.message] == ["ERROR"] * len(problems)
    caplog.clear()
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_TIMEOUT = 0.2
    with caplog.at_level("WARNING", logger="project.redis"):
        assert redis_durability_warn() == []
    assert "could not check" in caplog.text
