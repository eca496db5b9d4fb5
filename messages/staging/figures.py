"""The staging figures: one metrics hash per shard, summed for /metrics."""

from messages.staging.shards import Shard, each_shard
from project.redis import redis_client

DRAIN_BATCH_BUCKETS = (1, 10, 100, 1000, 5000, 10000)


def batch_size_bucket(size: int) -> str:
    for bound in DRAIN_BATCH_BUCKETS:
        if size <= bound:
            return str(bound)
    return "inf"


def metrics_snapshot() -> dict[str, int]:
    """The counters of every shard, summed (the drain lag: the largest)."""
    total: dict[str, int] = {}
    for raw in each_shard(lambda pipe, shard: pipe.hgetall(shard.metrics)):
        for name, value in raw.items():
            field = name.decode()
            if field == "drain_lag_ms":
                total[field] = max(total.get(field, 0), int(value))
            else:
                total[field] = total.get(field, 0) + int(value)
    return total


def metrics_incr(shard: Shard, name: str, amount: int = 1) -> None:
    redis_client().hincrby(shard.metrics, name, amount)
