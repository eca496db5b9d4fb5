"""The Redis client and key namespace every app shares (staging, stats markers, job rate limits).

One client per process, holding one connection, created on first use (so after a pre-fork
server forks). It holds one connection instead of checking one out of a pool per command: the
checkout probes the socket for stray data, a system call that costs the write path about a
quarter of its Redis time. (Threads share the connection under the client's lock; pipelines
still take their own from the pool.) Keyed by process id so a forked child never writes to
its parent's socket.
"""

import logging
import os
from urllib.parse import urlsplit

import redis
from django.conf import settings
from redis.commands.core import Script

logger = logging.getLogger(__name__)

_clients: dict[int, redis.Redis] = {}


def key(*parts: str) -> str:
    """A key in this deployment's namespace (REDIS_KEY_PREFIX), so several deployments or test
    runs can share one Redis."""
    return ":".join((settings.REDIS_KEY_PREFIX, *parts))


def redis_client() -> redis.Redis:
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_TIMEOUT,
            socket_connect_timeout=settings.REDIS_TIMEOUT,
            health_check_interval=30,
            decode_responses=False,
            single_connection_client=True,
        )
    return client


def redis_client_reset() -> None:
    """Forget this process's client (the next call connects anew, with current settings)."""
    client = _clients.pop(os.getpid(), None)
    if client is not None:
        client.close()


def redis_script(source: str) -> Script:
    """A Lua script, hashed once at import. Call it with client=redis_client(): it is bound to
    no client, so it survives redis_client_reset() and forks (EVALSHA, loading it on a miss)."""
    # Bytes need no client to encode them.
    return Script(None, source.encode())


def redis_durability_problems(client: redis.Redis) -> list[str]:
    """Why this Redis is not a safe home for the staging stream (empty when it is): the
    append-only file off (a restart loses every staged message), a policy that evicts keys
    (Redis may drop the stream itself), or no memory bound (the host runs out of memory first).

    Read from INFO, not CONFIG GET: managed Redis services refuse CONFIG. Raises redis errors.
    """
    persistence = client.info("persistence")
    memory = client.info("memory")
    problems = []
    if not int(persistence.get("aof_enabled", 0)):
        problems.append(
            "the append-only file is off (aof_enabled:0), so a Redis restart loses every staged "
            "message that was answered 202: set appendonly yes"
        )
    policy = str(memory.get("maxmemory_policy", ""))
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy or 'unknown'}, so Redis may evict staged messages when full: "
            "set maxmemory-policy noeviction"
        )
    if not int(memory.get("maxmemory", 0)):
        problems.append(
            "maxmemory is 0 (unbounded), so a growing backlog exhausts the host's memory instead of "
            "getting 503s: set maxmemory (REDIS_MAXMEMORY for scripts/redis.sh)"
        )
    return problems


def redis_durability_warn() -> list[str]:
    """Log, at ERROR, every durability problem of the staging Redis; return them. Called once
    when a web or worker process starts (project/wsgi.py, project/celery.py). Never raises: an
    unreachable Redis is logged and the process starts anyway (writes answer 503 meanwhile)."""
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=settings.REDIS_TIMEOUT, socket_connect_timeout=settings.REDIS_TIMEOUT
    )
    try:
        problems = redis_durability_problems(client)
    except Exception as exc:
        logger.warning("could not check the staging Redis's durability at start (%s)", type(exc).__name__)
        return []
    finally:
        client.close()
    where = urlsplit(settings.REDIS_URL)  # host and port only: the URL may hold a password
    for problem in problems:
        logger.error(
            "STAGING REDIS IS NOT DURABLE (%s:%s): %s (see deploy/redis.conf)", where.hostname, where.port, problem
        )
    return problems
