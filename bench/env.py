"""The benchmark's own database, Redis namespace and processes, so a bench never touches
development data."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "messy_bench"


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "REDIS_", "MESSY_", "CELERY_"))}
    env.update(
        MESSY_NO_LOCAL_SH="1",
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_SECRET_KEY="bench-only",
        POSTGRES_DB=DATABASE,
        REDIS_URL="redis://127.0.0.1:6379/6",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/7",
        REDIS_KEY_PREFIX="messy-bench",
        MEMCACHED_KEY_PREFIX="messy-bench",
        MESSY_BENCH_ENDPOINTS="1",
        MESSY_BACKLOG_MAX="100000000",
        LOG_LEVEL="WARNING",
        PATH=f"{ROOT / '.venv/bin'}:{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def database_reset() -> None:
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=bench_env(),
        check=True,
        timeout=300,
    )


def redis_reset() -> None:
    import redis

    for db in (6, 7):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


class Process:
    """A run script started in its own process group, stopped with everything it forked."""

    def __init__(self, args: list[str], **extra_env: str) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=bench_env(**extra_env),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
