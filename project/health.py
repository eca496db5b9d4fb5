"""Readiness (GET /readyz) and the operators' status (GET /status).

Readiness answers one question for a load balancer: can this web process accept a write now?
A write needs the staging Redis and nothing else (no database, no memcached: the design keeps
answering writes through their outages), so readiness checks only that Redis answers and takes
a write. PostgreSQL down must not take the web tier out of rotation and turn an outage the
design survives into a full write outage.

Everything else an operator or an alert wants to know goes on /status: one entry per component,
"ok" or "unavailable: <ErrorType>", with figures, and an overall "degraded" flag. It always
answers 200; it is a report, not a probe.

Components register themselves, like the collectors of project.metrics: the project's own
infrastructure below, the apps' from their AppConfig.ready(). So the project serves the report
without importing the apps (project <- stats <- messages <- tasks).
"""

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from pymemcache.client.base import Client as MemcachedClient
from pymemcache.client.base import normalize_server_spec

from project.redis import key, redis_client, redis_connect, redis_durability_problems
from project.storage import s3_probe_client

logger = logging.getLogger(__name__)

# How long the key a readiness check writes lives: only long enough to prove the write.
READINESS_KEY_TTL = 10

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


def readiness() -> dict[str, str]:
    """{"redis": "ok"}, or why the staging Redis cannot take a write: unreachable or slow
    (ConnectionError, TimeoutError), full under noeviction (OutOfMemoryError), a read-only
    replica (ReadOnlyError). PING and a SET with a short expiry in one round trip, bounded by
    REDIS_TIMEOUT. The SET is what a full Redis refuses; PING alone would still answer."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        if not settings.MESSY_REDIS_CLUSTER:  # a cluster routes by key: PING has none
            pipe.ping()
        pipe.set(key("readyz"), b"1", ex=READINESS_KEY_TTL)
        pipe.execute()
    except Exception as exc:
        logger.warning("not ready: the staging Redis cannot take a write (%s)", type(exc).__name__)
        return {"redis": _unavailable(exc)}
    return {"redis": "ok"}


# --- status ----------------------------------------------------------------------------------


class StatusComponents:
    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}

    def register(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe

    def report(self) -> dict[str, Any]:
        """Every component's state and figures. Each probe is bounded by its service's timeout
        and runs even when another failed."""
        components: dict[str, dict[str, Any]] = {}
        for name, probe in self._probes.items():
            try:
                components[name] = {"status": "ok", **probe()}
            except Unavailable as exc:
                components[name] = {"status": exc.error, **exc.details}
            except Exception as exc:
                logger.warning("status: %s unavailable (%s)", name, type(exc).__name__)
                components[name] = {"status": _unavailable(exc)}
        degraded = any(component["status"] != "ok" for component in components.values())
        return {"degraded": degraded, "components": components}


status_components = StatusComponents()


def _postgres() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {}


def _staging_redis() -> dict[str, Any]:
    """Readiness's check, and what would make the stream lose messages (project.redis)."""
    state = readiness()["redis"]
    if state != "ok":
        raise Unavailable(state, {})
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
        socket_timeout=settings.REDIS_TIMEOUT,
        socket_connect_timeout=settings.REDIS_TIMEOUT,
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
