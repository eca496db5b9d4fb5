"""Shared fixtures. Every test talks to the real services: PostgreSQL (pytest-django's test
database), Redis (databases 14 and 15, flushed before each test), memcached (keys under the
messy-test prefix) and the local S3-compatible server (tests/harness.py, started once a session).
Processes, environments and servers of the end-to-end runs are tests/harness.py's."""

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.harness import ROOT, S3Server, port_open, redis_admin
from tests.harness import free_port as free_port  # tests import it from here

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def redis_flushed() -> Iterator[None]:
    """A clean staging namespace and broker for every test."""
    for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL):
        redis_admin(url).flushdb()
    yield


def queued_messages(queue: str) -> list[dict]:
    """The Celery messages waiting in a broker queue: each one's headers (task, eta, ...) with
    its positional "args" and keyword "kwargs"."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
    decoded = [(m["headers"], json.loads(base64.b64decode(m["body"]))) for m in messages]
    return [{**headers, "args": body[0], "kwargs": body[1]} for headers, body in decoded]


def queued_tasks(queue: str) -> list[tuple[str, dict]]:
    """(task name, keyword arguments) of the Celery messages waiting in a broker queue."""
    return [(message["task"], message["kwargs"]) for message in queued_messages(queue)]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The local S3-compatible server (tests/harness.py) on the test settings' endpoint; one
    already listening there (make run's) is used as it is."""
    endpoint = str(settings.S3_ENDPOINT_URL)
    port = int(endpoint.rsplit(":", 1)[1])
    server = None if port_open(port) else S3Server(port).start()
    yield endpoint
    if server:
        server.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for processes a test starts: same settings, same test database."""
    env: dict[str, str] = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "project.settings_test"
    env["POSTGRES_DB"] = str(settings.DATABASES["default"]["NAME"])
    env["MESSY_NO_LOCAL_SH"] = "1"  # the run scripts would read a developer's local.sh
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env
