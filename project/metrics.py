"""The Prometheus registry that /metrics serves. Apps register their collectors in their
AppConfig.ready(), so the project serves the numbers without importing the apps."""

from prometheus_client import CollectorRegistry

# Only our own collectors (no process or platform ones): the numbers are shared by every
# process through Redis, so per-process figures would only confuse a scrape of one of them.
registry = CollectorRegistry(auto_describe=False)
