"""Operational endpoints: liveness, readiness, Prometheus metrics."""

import logging

from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse
from prometheus_client import generate_latest

from project.http import api_view, json_response, methods
from project.metrics import registry
from project.redis import redis_client

logger = logging.getLogger(__name__)


@api_view
@methods("GET", "HEAD")
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving. Touches nothing else, so a load balancer's probe is cheap."""
    return json_response({"status": "ok"})


def _check(name: str, probe) -> tuple[str, str]:
    try:
        probe()
        return name, "ok"
    except Exception as exc:
        logger.warning("readiness check %s failed: %r", name, exc)
        return name, f"unavailable: {type(exc).__name__}"


def _memcached_probe() -> None:
    client = caches["default"]._cache  # type: ignore[attr-defined]  # the pymemcache HashClient
    for server in client.clients.values():
        server.version()


@api_view
@methods("GET", "HEAD")
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to take traffic: PostgreSQL, Redis and every memcached server answer."""

    def postgres() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    checks = dict(
        [
            _check("postgres", postgres),
            _check("redis", lambda: redis_client().ping()),
            _check("memcached", _memcached_probe),
        ]
    )
    ready = all(value == "ok" for value in checks.values())
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """What the apps registered in project.metrics (in Prometheus' text format)."""
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")
