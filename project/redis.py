"""The Redis client and key namespace every app shares (staging, stats markers, job rate limits).

REDIS_URL names one Redis, or with MESSY_REDIS_CLUSTER=1 any node of a Redis Cluster. Every
connection is built here, as the process's Redis user (MESSY_REDIS_ROLE), over TLS for rediss://
URLs. One client per process holding one connection (no pool checkout per command), created on
first use and forgotten in a forked child.
Documented in docs/operations.md ("Notes from the code") and docs/data-tier.md.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from project.conf import cached_settings
from project.sockets import socket_timeouts_in_kernel

logger = logging.getLogger(__name__)

_client: redis.Redis | None = None


def _client_forget_in_child() -> None:
    # Dropped, not closed: the parent still uses that socket. Checked here rather than by
    # comparing os.getpid() on every call, a system call on the write path.
    global _client
    _client = None


os.register_at_fork(after_in_child=_client_forget_in_child)


def key(*parts: str) -> str:
    """A key in this deployment's namespace (REDIS_KEY_PREFIX), so several deployments or test
    runs can share one Redis."""
    return ":".join((cached_settings.REDIS_KEY_PREFIX, *parts))


class _KernelTimeouts:
    """A redis-py connection whose socket blocks, with its read and write timeout kept by the
    kernel (project.sockets): a command is then a send and a receive, without a poll before
    each. Constructed with socket_timeout=None, so that redis-py never puts the socket back
    under Python's timeout."""

    def __init__(self, *args: Any, kernel_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kernel_timeout = kernel_timeout

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[misc]
        socket_timeouts_in_kernel(sock, self.kernel_timeout)
        return sock


class _TcpConnection(_KernelTimeouts, redis.Connection):
    pass


class _UnixConnection(_KernelTimeouts, redis.UnixDomainSocketConnection):
    pass


# By URL scheme; TLS (rediss://) keeps redis-py's own timeouts.
_KERNEL_TIMEOUT_CONNECTIONS: dict[str, type[redis.connection.AbstractConnection]] = {
    "redis": _TcpConnection,
    "unix": _UnixConnection,
}


def redis_options(cluster: bool = False) -> dict[str, Any]:
    """Protocol, timeouts and retries of every client Messy builds, chosen here: redis-py's
    defaults move between major releases (docs/dependencies.md)."""
    return {
        # RESP2: the reply shapes the code parses (redis-py 8 defaults to RESP3, which turns the
        # replies of XREADGROUP, XAUTOCLAIM, HGETALL and INFO into other types).
        "protocol": 2,
        "socket_timeout": settings.REDIS_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_TIMEOUT,
        # No retry inside redis-py, as under redis-py 6 (whose from_url clients had none): a
        # request answers 503 and its client retries, a task runs again. redis-py 8 would retry
        # 10 times, each up to REDIS_TIMEOUT, past WEB_TIMEOUT. A cluster keeps redis-py 6's 3
        # retries with their backoff, which span a failover's replica promotion.
        "retry": Retry(ExponentialWithJitterBackoff(base=1, cap=10), 3) if cluster else Retry(NoBackoff(), 0),
    }


def redis_url_options(url: str) -> dict[str, Any]:
    """Connection options a URL cannot carry: the CA that signs the servers' TLS certificates
    (REDIS_TLS_CA_CERT_FILE) for rediss:// (verified, as redis-py does by default)."""
    if urlsplit(url).scheme == "rediss" and settings.REDIS_TLS_CA_CERT_FILE:
        return {"ssl_ca_certs": settings.REDIS_TLS_CA_CERT_FILE}
    return {}


def redis_connect(url: str, **options: Any) -> redis.Redis:
    """A client of one Redis server (not a cluster) named by a URL of the settings, the
    credentials in it: redis://, rediss://, unix://, or kombu's redis+socket:// (the broker's
    default, read as unix://). Connects on first use."""
    parts = urlsplit(url)
    if parts.scheme in ("redis+socket", "socket"):
        query = parts.query.replace("virtual_host=", "db=")
        url = urlunsplit(parts._replace(scheme="unix", query=query))
    return redis.Redis.from_url(url, **redis_url_options(url), **options)


def redis_client() -> redis.Redis:
    """This process's client. With MESSY_REDIS_CLUSTER it is a RedisCluster, typed as a Redis:
    it has the same commands, routed by key (each call here names keys of one slot)."""
    global _client
    client = _client
    if client is None:
        options = redis_options(settings.MESSY_REDIS_CLUSTER) | {
            "health_check_interval": 30,
            "decode_responses": False,
            **redis_url_options(settings.REDIS_URL),
        }
        if settings.MESSY_REDIS_CLUSTER:
            # No single connection: a cluster client holds a pool per node.
            client = cast(redis.Redis, RedisCluster.from_url(settings.REDIS_URL, **options))
        else:
            connection_class = _KERNEL_TIMEOUT_CONNECTIONS.get(urlsplit(settings.REDIS_URL).scheme)
            if connection_class is not None:
                options.update(
                    connection_class=connection_class, kernel_timeout=settings.REDIS_TIMEOUT, socket_timeout=None
                )
            client = redis.Redis.from_url(settings.REDIS_URL, single_connection_client=True, **options)
        _client = client
    return client


def redis_client_reset() -> None:
    """Forget this process's client (the next call connects anew, with current settings)."""
    global _client
    client, _client = _client, None
    if client is not None:
        client.close()


def redis_script(source: str) -> Script:
    """A Lua script, hashed once at import. Call it with client=redis_client(): it is bound to
    no client, so it survives redis_client_reset() and forks (EVALSHA, loading it on a miss)."""
    # Bytes need no client to encode them.
    return Script(None, source.encode())


class NotReplicated(redis.exceptions.RedisError):
    """A write ran, but fewer replicas than MESSY_STAGING_WAIT_REPLICAS confirmed it in time:
    it is not acknowledged (a failover now could lose it)."""


# One cluster topology refresh at a time and at most every this many seconds per process: while
# a failed master's replica is being promoted, every write to its slots fails, and each asking
# the cluster for its slots again would only add load.
_TOPOLOGY_REFRESH_SECONDS = 0.25
_topology_lock = threading.Lock()
_topology_refreshed = 0.0

# Errors after which a retry on the slot's current master may succeed: the master died or
# moved (failover, resharding), or the cluster is electing a new one.
_CLUSTER_RETRY = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
)
_CLUSTER_ATTEMPTS = 3


def _topology_refresh(cluster: RedisCluster) -> None:
    global _topology_refreshed
    with _topology_lock:
        if time.monotonic() - _topology_refreshed < _TOPOLOGY_REFRESH_SECONDS:
            return
        _topology_refreshed = time.monotonic()
        try:
            cluster.nodes_manager.initialize()
        except redis.exceptions.RedisError:
            logger.warning("could not refresh the Redis Cluster's slot map", exc_info=True)


def redis_script_run(script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a script (redis_script) and return its answer; with MESSY_STAGING_WAIT_REPLICAS > 0,
    only once that many replicas have its writes (WAIT, in the same round trip), else raise
    NotReplicated.

    The single-Redis default without replicas to wait for is one EVALSHA (the write path's
    cost). On a cluster (or with WAIT), the script and WAIT go down one connection to the master
    of keys[0]'s slot (all keys must share it): WAIT counts the writes of its own connection.
    After a failover or a slot move the slot map is refreshed and the call retried a few times;
    a script that ran before its connection broke may then run twice, which its callers must
    allow (the stage script's entries carry their message ids: the insert is idempotent)."""
    replicas = cached_settings.MESSY_STAGING_WAIT_REPLICAS
    client = redis_client()
    if not cached_settings.MESSY_REDIS_CLUSTER and not replicas:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return _single_connection_run(client, command)
        except redis.exceptions.NoScriptError:  # a restarted Redis without its script cache
            client.script_load(script.script)
            return _single_connection_run(client, command)
    cluster = cast(RedisCluster, client) if settings.MESSY_REDIS_CLUSTER else None
    for attempt in range(_CLUSTER_ATTEMPTS):
        node = client if cluster is None else cluster.get_redis_connection(cluster.get_node_from_key(keys[0]))
        pipe = node.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        if replicas:
            pipe.execute_command("WAIT", replicas, settings.MESSY_STAGING_WAIT_TIMEOUT_MS)
        try:
            results = pipe.execute(raise_on_error=False)
            error = next((r for r in results if isinstance(r, Exception)), None)
            if isinstance(error, redis.exceptions.NoScriptError):
                node.script_load(script.script)  # a promoted replica has no script cache
                continue
            if error is not None:
                raise error
        except _CLUSTER_RETRY:
            if cluster is None or attempt == _CLUSTER_ATTEMPTS - 1:
                raise
            _topology_refresh(cluster)
            time.sleep(0.05 * (attempt + 1))
            continue
        if replicas and int(results[1]) < replicas:
            raise NotReplicated(f"{results[1]} of {replicas} replicas confirmed the write")
        return results[0]
    raise redis.exceptions.ConnectionError("the script's slot has no reachable master")


def _single_connection_run(client: redis.Redis, command: tuple[Any, ...]) -> Any:
    """One command on the client's one connection (redis_client: single_connection_client),
    under its lock and its retry policy (a broken connection is closed and the command sent
    again), as execute_command runs it, without the layers around it (the arguments copied
    again, the options handled, the reply looked up among the response callbacks), a measurable
    share of the write path's Redis call (docs/benchmarks.md). An error reply is raised
    (NoScriptError, OutOfMemoryError, ...)."""
    connection = client.connection
    assert connection is not None, "redis_client() holds one connection"

    def send_and_read() -> Any:
        connection.send_command(*command)
        return connection.read_response()

    with client.single_connection_lock:
        return connection.retry.call_with_retry(send_and_read, lambda _error: connection.disconnect())


def redis_durability_problems(client: redis.Redis) -> list[str]:
    """Why this Redis is not a safe home for the staging stream (empty when it is): the
    append-only file off (a restart loses every staged message), a policy that evicts keys
    (Redis may drop the stream itself), or no memory bound (the host runs out of memory first).

    Read from INFO, not CONFIG GET: managed Redis services refuse CONFIG. On a cluster, every
    master is asked, and a problem names its master. Raises redis errors.
    """
    if isinstance(client, RedisCluster):
        return [
            f"{node.name}: {problem}"
            for node in client.get_primaries()
            for problem in redis_durability_problems(client.get_redis_connection(node))
        ]
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
    client: redis.Redis | RedisCluster | None = None
    try:
        # A cluster client connects at once, to learn the slots: inside the try.
        options = redis_options(settings.MESSY_REDIS_CLUSTER)
        client = (
            RedisCluster.from_url(settings.REDIS_URL, **redis_url_options(settings.REDIS_URL), **options)
            if settings.MESSY_REDIS_CLUSTER
            else redis_connect(settings.REDIS_URL, **options)
        )
        problems = redis_durability_problems(cast(redis.Redis, client))
    except Exception as exc:
        logger.warning("could not check the staging Redis's durability at start (%s)", type(exc).__name__)
        return []
    finally:
        if client is not None:
            client.close()
    url = urlsplit(settings.REDIS_URL)  # host and port (or socket) only: the URL may hold a password
    where = url.path if url.scheme == "unix" else f"{url.hostname}:{url.port}"
    for problem in problems:
        logger.error("STAGING REDIS IS NOT DURABLE (%s): %s (see deploy/redis.conf)", where, problem)
    return problems


def redis_aof_rewrite() -> bool:
    """Have the staging Redis rewrite its append-only file (BGREWRITEAOF; on a cluster, every
    master), so that entries deleted from it (an erasure's XDEL) leave the disk too: until a
    rewrite, the file still holds every command that wrote them. Runs as the worker user, which
    may run BGREWRITEAOF and nothing else of its kind. True when every rewrite started or was
    scheduled; False when one was already running (it began before the deletion and keeps the
    old entries): call again later. Raises redis errors."""
    client = redis_client()
    nodes = (
        [client.get_redis_connection(node) for node in cast(RedisCluster, client).get_primaries()]
        if settings.MESSY_REDIS_CLUSTER
        else [client]
    )
    started = True
    for node in nodes:
        try:
            node.bgrewriteaof()
        except redis.exceptions.ResponseError as exc:
            if "already in progress" not in str(exc):
                raise
            started = False
    return started
