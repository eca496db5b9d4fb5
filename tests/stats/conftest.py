"""Fixtures for the stats tests: known messages, a bucket of its own per test, and an S3
server the test controls (to stop and restart it, or to have it enforce CORS rules)."""

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from messages.services import messages_persist
from messages.staged import StagedPayload
from project import storage
from tests.harness import ROOT, Process, ProcessGroup, S3Server, port_open


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
    storage.buckets_prepared_forget()


@pytest.fixture
def stats_bucket(s3_server: str, settings: Any) -> Iterator[str]:
    """A fresh, not yet created bucket on the session's S3 server, so tests never see each
    other's blobs."""
    settings.S3_BUCKET = f"h-stats-{uuid.uuid4().hex[:12]}"
    s3_clients_reset()
    yield settings.S3_BUCKET
    s3_clients_reset()


class S3Process(S3Server):
    """The local S3 server on ports of its own, which the test may stop and start again (with
    its data: the server is persistent)."""

    def stop(self) -> None:
        super().stop()
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
    server.close()
    s3_clients_reset()


def publish_schedule_migrated() -> None:
    """Run the schedule's data migration again: transactional tests empty every table after
    them, so the row it made may be gone."""
    call_command("migrate", "stats", "0003", verbosity=0)
    call_command("migrate", "stats", verbosity=0)


def celery_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`celery -A project ARGS` in a process group of its own, logging to a file. (Workers
    and beats are better started through the run scripts: stats_worker_start.)"""
    command = [str(ROOT / ".venv/bin/celery"), "-A", "project", *args, "--loglevel", "INFO"]
    return Process(command, env, log).popen


def stats_worker_start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker for the "ingest" and "stats" queues, one pool process, started as operators
    start it (./runworker.sh ingest), logging to `log` (a *.log file)."""
    assert log.suffix == ".log", log
    return ProcessGroup(env, log.parent).worker(log.stem, role="ingest", concurrency=1).popen


@pytest.fixture
def minute() -> datetime:
    """A fixed 'now' for blobs: 12:34:56 on a known day."""
    return datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
