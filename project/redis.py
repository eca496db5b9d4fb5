"""The Redis client and key namespace every app shares (staging, stats markers, job rate limits).

One client per process, holding one connection, created on first use (so after a pre-fork
server forks). It holds one connection instead of checking one out of a pool per command: the
checkout probes the socket for stray data, a system call that costs the write path about a
quarter of its Redis time. (Threads share the connection under the client's lock; pipelines
still take their own from the pool.) Keyed by process id so a forked child never writes to
its parent's socket.
"""

import os

import redis
from django.conf import settings
from redis.commands.core import Script

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
