"""Fixtures for the jobs tests: the S3 bucket, API tokens, rollup checks and real Celery
worker processes consuming the jobs queue (on this test run's own broker database)."""

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from messages.services import messages_persist
from messages.staged import StagedPayload
from project.storage import bucket_ensure
from stats.selectors import rollups_differences
from tasks import auth
from tests.harness import Process, ProcessGroup


@pytest.fixture
def s3(s3_server: str) -> str:
    bucket_ensure()
    return s3_server


@pytest.fixture
def token() -> str:
    """An admin token: every scope, every job (tests/tasks/test_scopes.py narrows them)."""
    _, raw = auth.api_token_create(f"test-{uuid.uuid4().hex[:8]}", ["admin"])
    return raw


def staff_user(username: str, *scopes: str) -> Any:
    """A staff user with the jobs API scopes named (tasks.scope_<scope> permissions)."""
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="tasks", codename__in=[f"scope_{scope}" for scope in scopes])
    )
    return user


@pytest.fixture
def api(token: str) -> Client:
    """A client that sends a valid API token with every request."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def payload(
    username: str, city: str = "Paris", state: str = "IDF", accepted_at: int = 1_764_000_000_000
) -> StagedPayload:
    return {
        "id": str(uuid.uuid4()),
        "username": username,
        "city": city,
        "state": state,
        "message": f"hello from {username}",
        "accepted_at": accepted_at,
    }


def store(rows: list[StagedPayload]) -> int:
    return messages_persist(rows)


def assert_rollups_exact() -> None:
    assert rollups_differences() == []


def ndjson(rows: Sequence[dict[str, Any] | str]) -> bytes:
    import json

    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()


@pytest.fixture
def workers(subprocess_env: dict[str, str], artifacts_dir: Path, request: Any) -> Iterator[Any]:
    """Start `./runworker.sh jobs` workers (one process each, in a process group of its own,
    so kill9() takes it and its pool child at once, as a machine failure would) with
    `workers(**extra_env)`; every one still running is stopped afterwards."""
    group = ProcessGroup(subprocess_env, artifacts_dir)

    def start(**extra_env: str) -> Process:
        name = f"tasks-worker-{request.node.name}-{len(group.processes)}"
        return group.worker(name, role="jobs", concurrency=1, **extra_env)

    yield start
    group.stop_all()


def import_job(data: bytes, file_format: str = "", name: str = "upload.ndjson") -> Any:
    """A queued import job of `data`, with no task published (the test runs it)."""
    import io

    from tasks.importing import import_job_create

    return import_job_create(io.BytesIO(data), name=name, file_format=file_format, enqueue=False)


def rows(count: int, username: str = "ana", start: int = 0) -> list[dict[str, Any]]:
    return [
        {"username": username, "city": f"city{i % 3}", "state": f"S{i % 2}", "message": f"message {i}"}
        for i in range(start, start + count)
    ]
