"""The write path's numbers for /metrics, read from Redis (see project.metrics)."""

import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from messages import staging

logger = logging.getLogger(__name__)


class StagingCollector:
    """Metrics kept in Redis by every web and worker process, on every machine, so one scrape
    of any web process reports the whole deployment (and the numbers agree across them)."""

    def collect(self) -> Iterator[Any]:
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
        dead, oldest_ms = staging.dead_letters_summary()
        yield GaugeMetricFamily(
            "messy_dead_letters", "Staged messages parked because no drain could store them.", value=dead
        )
        yield GaugeMetricFamily(
            "messy_dead_letter_oldest_age_seconds",
            "How long the oldest dead letter has waited for a replay or a purge (0: none).",
            value=max(0.0, time.time() - oldest_ms / 1000) if oldest_ms else 0,
        )
        yield GaugeMetricFamily(
            "messy_drain_lag_seconds",
            "Accept-to-store delay of the oldest message in the latest drain batch.",
            value=counters.get("drain_lag_ms", 0) / 1000,
        )


def _age_seconds(oldest_ms: int | None) -> float | None:
    """How long ago the oldest staged message was accepted (None: nothing is staged)."""
    return None if oldest_ms is None else max(0.0, round(time.time() - oldest_ms / 1000, 3))


class StagingAgeCollector:
    """How long the oldest staged message has waited to be stored (0 when nothing is staged).
    Left out when Redis does not answer."""

    def collect(self) -> Iterator[Any]:
        try:
            oldest_ms = staging.backlog_oldest_ms()
        except redis.RedisError as exc:
            logger.warning("metrics: oldest staged message unavailable (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "messy_backlog_oldest_age_seconds",
            "Age of the oldest message staged and not yet stored (0: nothing staged).",
            value=_age_seconds(oldest_ms) or 0,
        )


def staging_status() -> dict[str, Any]:
    """/status's staging component: messages staged and not yet stored, the age of the oldest,
    the dead letters parked, and the accept-to-store delay of the latest drain batch."""
    oldest_ms = staging.backlog_oldest_ms()
    return {
        "backlog": staging.backlog(),
        "oldest_age_seconds": _age_seconds(oldest_ms),
        "dead_letters": staging.dead_letters_summary()[0],
        "drain_lag_seconds": staging.metrics_snapshot().get("drain_lag_ms", 0) / 1000,
    }
