"""Readiness (GET /readyz) and the operators' status (GET /status).

Readiness checks only what a write needs, the staging Redis: PostgreSQL down must not take the
web tier out of rotation. /status reports every component and always answers 200; its probes run
concurrently within STATUS_DEADLINE_SECONDS and a report is reused for a few seconds, so a hung
service never holds a web process. Components register themselves (the apps' from
AppConfig.ready()), so the project never imports the apps.
Documented in docs/operations.md ("Notes from the code") and docs/deployment.md.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection, connections
from pymemcache.client.base import Client as MemcachedClient
from pymemcache.client.base import normalize_server_spec

from project.redis import key, redis_client, redis_connect, redis_durability_problems, redis_options
from project.storage import s3_probe_client

logger = logging.getLogger(__name__)

# How long the key a readiness check writes lives: only long enough to prove the write.
READINESS_KEY_TTL = 10
# The longest /status waits for its probes; one still running then is reported as a timeout.
STATUS_DEADLINE_SECONDS = 0.8

# A probe returns the component's figures (may be empty) and raises when it is unavailable.
Probe = Callable[[], dict[str, Any]]


class Unavailable(Exception):
    """A probe's failure that still has figures to show (which memcached server is down)."""

    def __init__(self, error: str, details: dict[str, Any]) -> None:
        super().__init__(error)
        self.error = error
        self.details = details


def _unavailable(exc: BaseException) -> str:
    return f"unavailable: {type(exc).__name__}"


# --- readiness -------------------------------------------------------------------------------


def _staging_write() -> None:
    """PING and a SET with a short expiry in one round trip, bounded by REDIS_TIMEOUT; raises
    what stops the staging Redis taking a write. The SET is what a full or read-only Redis
    refuses; PING alone would still answer."""
    pipe = redis_client().pipeline(transaction=False)
    if not settings.MESSY_REDIS_CLUSTER:  # a cluster routes by key: PING has none
        pipe.ping()
    pipe.set(key("readyz"), b"1", ex=READINESS_KEY_TTL)
    pipe.execute()


def readiness() -> dict[str, str]:
    """{"redis": "ok"}, or why this host cannot serve writes: the staging Redis unreachable or
    slow (ConnectionError, TimeoutError), or a read-only replica (ReadOnlyError). A Redis that is
    full (OutOfMemoryError) is ready: it answers, every web host would get the same refusal
    (503 staging_full, with Retry-After), and taking them all out of rotation would turn it into
    an outage of every endpoint; /status reports it."""
    try:
        _staging_write()
    except redis.exceptions.OutOfMemoryError:
        pass
    except Exception as exc:
        logger.warning("not ready: the staging Redis cannot take a write (%s)", type(exc).__name__)
        return {"redis": _unavailable(exc)}
    return {"redis": "ok"}


# --- status ----------------------------------------------------------------------------------


class StatusComponents:
    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}
        # Each component's probe still running, if any: a hung one is not started again.
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def register(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe

    def report(self) -> dict[str, Any]:
        """Every component's state and figures: the last report if it is younger than
        MESSY_STATUS_CACHE_SECONDS, else a new one (at most STATUS_DEADLINE_SECONDS)."""
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < settings.MESSY_STATUS_CACHE_SECONDS:
                return cached[1]
            report = self._probe_all()
            self._cached = (time.monotonic(), report)
            return report

    def _probe_all(self) -> dict[str, Any]:
        """Each probe in a thread of its own, all at once; each is bounded by its service's
        timeout too, so a thread left behind by the deadline ends on its own."""
        deadline = time.monotonic() + STATUS_DEADLINE_SECONDS
        results: dict[str, dict[str, Any]] = {}  # this run's: a late thread writes to it unread
        for name, probe in self._probes.items():
            previous = self._running.get(name)
            if previous is not None and previous.is_alive():
                continue
            thread = threading.Thread(
                target=_probe_run, args=(name, probe, results), name=f"status-{name}", daemon=True
            )
            self._running[name] = thread
            thread.start()
        for name in self._probes:
            self._running[name].join(max(0.0, deadline - time.monotonic()))
        components: dict[str, dict[str, Any]] = {}
        for name in self._probes:
            if name not in results:
                logger.warning("status: %s did not answer within %s s", name, STATUS_DEADLINE_SECONDS)
            components[name] = results.get(name, {"status": "unavailable: TimeoutError"})
        degraded = any(component["status"] != "ok" for component in components.values())
        return {"degraded": degraded, "components": components}


def _probe_run(name: str, probe: Probe, results: dict[str, dict[str, Any]]) -> None:
    try:
        results[name] = {"status": "ok", **probe()}
    except Unavailable as exc:
        results[name] = {"status": exc.error, **exc.details}
    except Exception as exc:
        logger.warning("status: %s unavailable (%s)", name, type(exc).__name__)
        results[name] = {"status": _unavailable(exc)}
    finally:
        connections.close_all()  # this thread's own, if the probe opened one


status_components = StatusComponents()


def _postgres() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {}


def _staging_redis() -> dict[str, Any]:
    """Readiness's check, a full Redis included, and what would make the stream lose messages
    (project.redis)."""
    try:
        _staging_write()
    except Exception as exc:
        raise Unavailable(_unavailable(exc), {}) from None
    # Available either way; an alert on a non-empty list catches a Redis restarted without
    # its configuration.
    return {"durability_problems": redis_durability_problems(redis_client())}


def _memcached() -> dict[str, Any]:
    """Each server on its own, with a fresh connection: the cache client skips a dead server
    for a while, so asking it would report a server down as missing rather than down."""
    cache: dict[str, Any] = settings.CACHES["default"]  # type: ignore[assignment]
    timeout = cache.get("OPTIONS", {}).get("timeout", 0.2)
    servers: dict[str, str] = {}
    for server in cache["LOCATION"]:
        # host:port, or unix:/path (a socket), as the cache client reads them
        client = MemcachedClient(normalize_server_spec(server), connect_timeout=timeout, timeout=timeout)
        try:
            client.version()
            servers[server] = "ok"
        except Exception as exc:
            servers[server] = _unavailable(exc)
        finally:
            client.close()
    failed = [state for state in servers.values() if state != "ok"]
    if failed:
        raise Unavailable(failed[0], {"servers": servers})
    return {"servers": servers}


def _s3() -> dict[str, Any]:
    s3_probe_client().head_bucket(Bucket=settings.S3_BUCKET)
    return {}


def _broker() -> dict[str, Any]:
    client = redis_connect(
        settings.CELERY_BROKER_URL,
        **redis_options(),
    )
    try:
        client.ping()
    finally:
        client.close()
    return {}


status_components.register("postgres", _postgres)
status_components.register("redis", _staging_redis)
status_components.register("memcached", _memcached)
status_components.register("s3", _s3)
status_components.register("broker", _broker)
