"""Operational endpoints: liveness, readiness, Prometheus metrics."""

import logging

from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from messages import staging
from project.http import api_view, json_response, methods

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
            _check("redis", lambda: staging.redis_client().ping()),
            _check("memcached", _memcached_probe),
        ]
    )
    ready = all(value == "ok" for value in checks.values())
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


class _SharedCountersCollector:
    """Metrics kept in Redis by every web and worker process, on every machine, so one scrape
    of any web process reports the whole deployment (and the numbers agree across them)."""

    def collect(self):
        counters = staging.metrics_snapshot()
        yield GaugeMetricFamily(
            "messy_backlog_messages", "Messages staged and not yet stored.", value=staging.backlog()
        )
        yield CounterMetricFamily(
            "messy_messages_accepted", "Messages accepted (202) by the write endpoints.", value=staging.accepted_total()
        )
        for name, help_text in (
            ("stored", "Messages newly stored in PostgreSQL by drain workers."),
            ("dead_lettered", "Staged entries parked because they could never be stored."),
        ):
            yield CounterMetricFamily(f"messy_messages_{name}", help_text, value=counters.get(name, 0))
        rejected = CounterMetricFamily(
            "messy_messages_rejected", "Messages refused by the write endpoints.", labels=["reason"]
        )
        rejected.add_metric(["invalid"], counters.get("rejected_invalid", 0))
        rejected.add_metric(["backpressure"], counters.get("rejected_backpressure", 0))
        yield rejected
        buckets = []
        cumulative = 0
        for bound in (*staging.DRAIN_BATCH_BUCKETS, "inf"):
            cumulative += counters.get(f"drain_batch_size_le_{bound}", 0)
            buckets.append(("+Inf" if bound == "inf" else str(bound), cumulative))
        yield HistogramMetricFamily(
            "messy_drain_batch_size",
            "Entries per drain batch.",
            buckets=buckets,
            sum_value=counters.get("drain_entries", 0),
        )
        yield GaugeMetricFamily(
            "messy_drain_lag_seconds",
            "Accept-to-store delay of the oldest message in the latest drain batch.",
            value=counters.get("drain_lag_ms", 0) / 1000,
        )


def metrics(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SharedCountersCollector())
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")
