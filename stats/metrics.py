"""The stats publisher's numbers for /metrics (see project.metrics)."""

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily

from stats.selectors import stats_published

logger = logging.getLogger(__name__)


class StatsPublishCollector:
    """How old the published stats blob is: the beat publishes once a minute, so an age of a
    few minutes means the publisher is broken (S3 down, no worker on the stats queue, no beat).
    Read from the marker the last successful publish left in Redis: one GET, no S3 call."""

    def collect(self) -> Iterator[Any]:
        try:
            published = stats_published()
        except redis.RedisError as exc:
            logger.warning("metrics: stats publish marker unavailable (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "messy_stats_published",
            "Whether a stats blob was ever published (1) or not yet (0).",
            value=int(bool(published)),
        )
        if published:
            generated_at = datetime.fromisoformat(published["generated_at"]).timestamp()
            yield GaugeMetricFamily(
                "messy_stats_last_publish_age_seconds",
                "Seconds since the published stats blob was generated (published once a minute).",
                value=max(0.0, round(time.time() - generated_at, 3)),
            )
