"""The Prometheus registry that /metrics serves. Apps register their collectors in their
AppConfig.ready(), so the project serves the numbers without importing the apps; the project's
own (the build, the broker's queues) are registered below.
Documented in docs/operations.md ("Logs, metrics and Flower").
"""

import functools
import logging
import os
import platform
import subprocess
import tomllib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import celery
import django
import redis
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from project.redis import redis_client, redis_connect, redis_options
from project.request_metrics import RequestsCollector
from project.workers import workers_live

logger = logging.getLogger(__name__)

# Only our own collectors (no process or platform ones): the numbers are shared by every
# process through Redis, so per-process figures would only confuse a scrape of one of them.
registry = CollectorRegistry(auto_describe=False)


@functools.cache
def build_info() -> dict[str, str]:
    """What this process runs, read once: the version in pyproject.toml, the commit (MESSY_GIT_COMMIT,
    else `git rev-parse` of the checkout, else "unknown"), and the Python, Django and Celery versions."""
    with (settings.BASE_DIR / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    commit = settings.MESSY_GIT_COMMIT
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 (git from PATH, like an operator's)
                cwd=settings.BASE_DIR,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return {
        "version": version,
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
    }


class BuildInfoCollector:
    def collect(self) -> Iterator[Any]:
        info = build_info()
        metric = GaugeMetricFamily("messy_build_info", "What this process runs (always 1).", labels=list(info))
        metric.add_metric(list(info.values()), 1)
        yield metric


# One per process (a forked child never shares its parent's socket) and broker URL.
_broker_clients: dict[tuple[int, str], redis.Redis] = {}


def _broker_client() -> redis.Redis:
    client_key = (os.getpid(), settings.CELERY_BROKER_URL)
    client = _broker_clients.get(client_key)
    if client is None:
        client = _broker_clients[client_key] = redis_connect(
            settings.CELERY_BROKER_URL,
            **redis_options(),
        )
    return client


class BrokerQueuesCollector:
    """Tasks waiting in each Celery queue (LLEN on the broker Redis: kombu keeps a queue as a
    list, one more per priority step when priorities are used). Tasks already handed to a
    worker are not counted. Leaves the metric out when the broker is not a Redis or does not
    answer, so one outage does not hide every other number."""

    def collect(self) -> Iterator[Any]:
        if urlsplit(settings.CELERY_BROKER_URL).scheme not in ("redis", "rediss", "redis+socket", "socket"):
            return
        queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
        keys = [
            (name, name if step == 0 else f"{name}{Channel.sep}{step}") for name in queues for step in PRIORITY_STEPS
        ]
        pipe = _broker_client().pipeline(transaction=False)
        for _, key in keys:
            pipe.llen(key)
        try:
            lengths = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("metrics: broker queue lengths unavailable (%s)", type(exc).__name__)
            return
        totals = dict.fromkeys(queues, 0)
        for (name, _), length in zip(keys, lengths, strict=True):
            totals[name] += int(length)
        metric = GaugeMetricFamily(
            "messy_broker_queue_messages", "Tasks waiting in a Celery queue on the broker.", labels=["queue"]
        )
        for name, total in totals.items():
            metric.add_metric([name], total)
        yield metric


class WorkersCollector:
    """Live Celery worker processes and their pool processes, by pool (project.workers).
    Left out when the staging Redis does not answer."""

    def collect(self) -> Iterator[Any]:
        try:
            live = workers_live()
        except redis.RedisError as exc:
            logger.warning("metrics: live workers unavailable (%s)", type(exc).__name__)
            return
        workers = GaugeMetricFamily("messy_workers_live", "Celery worker processes alive, by pool.", labels=["pool"])
        processes = GaugeMetricFamily(
            "messy_worker_pool_processes", "Pool processes of the live Celery workers, by pool.", labels=["pool"]
        )
        for pool, (count, total) in sorted(live.items()):
            workers.add_metric([pool], count)
            processes.add_metric([pool], total)
        yield workers
        yield processes


class RedisMemoryCollector:
    """Memory used and the maxmemory limit (0: none) of the staging and broker Redis servers
    (INFO memory). A Redis Cluster is left to redis_exporter (one series per node); a server
    that does not answer is left out."""

    def collect(self) -> Iterator[Any]:
        used = GaugeMetricFamily("messy_redis_memory_used_bytes", "Memory a Redis server uses.", labels=["role"])
        limit = GaugeMetricFamily(
            "messy_redis_memory_max_bytes", "A Redis server's maxmemory (0: no limit).", labels=["role"]
        )
        servers: list[tuple[str, Any]] = [("broker", _broker_client)]
        if not settings.MESSY_REDIS_CLUSTER:
            servers.insert(0, ("staging", redis_client))
        for role, client in servers:
            try:
                info = client().info("memory")
            except redis.RedisError as exc:
                logger.warning("metrics: %s Redis memory unavailable (%s)", role, type(exc).__name__)
                continue
            used.add_metric([role], int(info.get("used_memory", 0)))
            limit.add_metric([role], int(info.get("maxmemory", 0)))
        yield used
        yield limit


registry.register(BuildInfoCollector())
registry.register(BrokerQueuesCollector())
registry.register(WorkersCollector())
registry.register(RedisMemoryCollector())
registry.register(RequestsCollector())
