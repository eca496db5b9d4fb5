"""Shared fixtures. Every test talks to the real services: PostgreSQL (pytest-django's test
database), Redis (databases 14 and 15, flushed before each test), memcached (keys under the
messy-test prefix) and a local S3-compatible server (moto's server, started once a session)."""

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def redis_flushed() -> Iterator[None]:
    """A clean staging namespace and broker for every test."""
    for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL):
        redis.Redis.from_url(url).flushdb()
    yield


def queued_tasks(queue: str) -> list[tuple[str, dict]]:
    """(task name, keyword arguments) of the Celery messages waiting in a broker queue."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[1]) for m in messages]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1."""
    endpoint = str(settings.S3_ENDPOINT_URL)
    port = int(endpoint.rsplit(":", 1)[1])
    process = None
    if not port_open(port):
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
    yield endpoint
    if process:
        process.terminate()
        process.wait(10)


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
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env
