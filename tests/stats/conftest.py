"""Fixtures for the stats tests: known messages, a bucket of its own per test, and an S3
server the test controls (to stop and restart it, or to have it enforce CORS rules)."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from messages.services import messages_persist
from messages.staging import StagedPayload
from project import storage
from stats.services import publish
from tests.conftest import free_port, port_open, wait_for_port


def payload(username: str, city: str, state: str, accepted_at: datetime, message: str = "hello") -> StagedPayload:
    return {
        "id": str(uuid.uuid4()),
        "username": username,
        "city": city,
        "state": state,
        "message": message,
        "accepted_at": int(accepted_at.timestamp() * 1000),
    }


def store(rows: list[StagedPayload]) -> int:
    return messages_persist(rows)


def s3_clients_reset() -> None:
    storage.s3_client.cache_clear()
    storage.s3_public_client.cache_clear()
    publish._buckets_prepared.clear()


@pytest.fixture
def stats_bucket(s3_server: str, settings: Any) -> Iterator[str]:
    """A fresh, not yet created bucket on the session's S3 server, so tests never see each
    other's blobs."""
    settings.S3_BUCKET = f"h-stats-{uuid.uuid4().hex[:12]}"
    s3_clients_reset()
    yield settings.S3_BUCKET
    s3_clients_reset()


class S3Process:
    """moto's S3 server on a port of its own. MOTO_DISABLE_GLOBAL_CORS makes it answer CORS
    from the bucket's rules only, as AWS does (by default it allows every origin)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MOTO_DISABLE_GLOBAL_CORS": "1"}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        assert not port_open(self.port)


@pytest.fixture
def own_s3(settings: Any) -> Iterator[S3Process]:
    """Settings pointed at an S3 server this test starts and may stop."""
    server = S3Process()
    server.start()
    settings.S3_ENDPOINT_URL = settings.S3_PUBLIC_ENDPOINT_URL = server.endpoint
    settings.S3_BUCKET = "h-stats-own"
    s3_clients_reset()
    yield server
    server.stop()
    s3_clients_reset()


def publish_schedule_migrated() -> None:
    """Run the schedule's data migration again: transactional tests empty every table after
    them, so the row it made may be gone."""
    call_command("migrate", "stats", "0003", verbosity=0)
    call_command("migrate", "stats", verbosity=0)


def celery_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A real Celery process (worker or beat) of the project, logging to a file."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project", *args, "--loglevel", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stats_worker_start(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One worker process on the "stats" queue only."""
    quiet = ("--without-gossip", "--without-mingle", "--without-heartbeat")
    return celery_start(["worker", "-Q", "stats", "--pool", "solo", "-n", f"{name}@%h", *quiet], env, log)


@pytest.fixture
def minute() -> datetime:
    """A fixed 'now' for blobs: 12:34:56 on a known day."""
    return datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
