"""Web requests by endpoint and status, with a latency histogram, for /metrics. Documented in
docs/integrations.md.

Counted in the process that answers, in a dict (no Redis call per request), and added to one
Redis hash by a thread of each process about once a second, so one scrape of any web process
reports the whole web tier. `request_metrics_application` wraps the WSGI application, so the
lean write path and Django's are counted alike.
"""

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from django.http import HttpRequest, HttpResponse
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from project.lean import Environ, StartResponse, WsgiApp, lean_paths
from project.redis import key, redis_client

logger = logging.getLogger(__name__)

# Upper bounds in seconds; the write path answers in the first few.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_SECONDS = 1.0
# A path no route matches (a scanner's guesses): one label, so they cannot grow the hash.
UNMATCHED = "unmatched"
# Where request_route_middleware leaves the route Django resolved: in the WSGI environ, which is
# the request's META, so the WSGI wrapper reads it without resolving the path again.
ROUTE_KEY = "messy.route"

# (endpoint, status) -> [count per bucket (the last one: over every bound)..., sum in microseconds]
_pending: dict[tuple[str, str], list[int]] = {}
_lock = threading.Lock()
_flusher: threading.Thread | None = None


def _forget_in_child() -> None:
    # A forked web worker starts with no counts of its own and no flusher thread (threads do
    # not survive a fork); its first request starts one.
    global _lock, _flusher
    _pending.clear()
    _lock = threading.Lock()
    _flusher = None


os.register_at_fork(after_in_child=_forget_in_child)


def requests_key() -> str:
    return key("web", "requests")


def request_observe(endpoint: str, status: str, seconds: float) -> None:
    """Count one answered request of `endpoint` (a route, not a path) with `status`."""
    index = bisect.bisect_left(BUCKETS, seconds)
    with _lock:
        counts = _pending.get((endpoint, status))
        if counts is None:
            counts = _pending[(endpoint, status)] = [0] * (len(BUCKETS) + 2)
        counts[index] += 1
        counts[-1] += int(seconds * 1_000_000)
    if _flusher is None:
        _flusher_start()


def _flusher_start() -> None:
    global _flusher
    with _lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_forever, name="request-metrics", daemon=True)
    _flusher.start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        request_metrics_flush()


def request_metrics_flush() -> None:
    """Add this process's counts to the shared hash. On a Redis error they are kept for the next
    flush (they are a few numbers per endpoint and status, so they cannot grow without bound)."""
    with _lock:
        if not _pending:
            return
        taken = dict(_pending)
        _pending.clear()
    try:
        pipe = redis_client().pipeline(transaction=False)
        hash_key = requests_key()
        for (endpoint, status), counts in taken.items():
            for index, count in enumerate(counts):
                if count:
                    pipe.hincrby(hash_key, f"{endpoint}\t{status}\t{index}", count)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("request metrics not flushed (%s); kept for the next flush", type(exc).__name__)
        with _lock:
            for pair, counts in taken.items():
                kept = _pending.setdefault(pair, [0] * len(counts))
                for index, count in enumerate(counts):
                    kept[index] += count


def endpoint_of(environ: Environ) -> str:
    """The route that served the request ("/message/<uuid:message_id>/"), so that label values
    stay few whatever paths clients send."""
    path = environ.get("PATH_INFO", "")
    if path in lean_paths() and ROUTE_KEY not in environ:
        return path if path.endswith("/") else path + "/"
    return environ.get(ROUTE_KEY, UNMATCHED)


def request_route_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Leave the route Django resolved for the request where request_metrics_application finds it."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        match = request.resolver_match
        if match is not None:
            request.META[ROUTE_KEY] = "/" + str(match.route)
        return response

    return middleware


def request_metrics_application(application: WsgiApp) -> WsgiApp:
    """`application`, counting each request's endpoint, status and time to the answer."""

    def counted(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        statuses: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            statuses.append(status[:3])
            return start_response(status, headers, exc_info)

        body = application(environ, start)
        request_observe(
            endpoint_of(environ),
            statuses[-1] if statuses else "000",
            time.perf_counter() - started,
        )
        return body

    return counted


class RequestsCollector:
    """messy_http_requests_total{endpoint,status} and messy_http_request_duration_seconds{endpoint},
    from the shared hash (every web process's flushed counts). Left out when Redis does not
    answer."""

    def collect(self) -> Iterator[Any]:
        try:
            raw = redis_client().hgetall(requests_key())
        except redis.RedisError as exc:
            logger.warning("metrics: web request counts unavailable (%s)", type(exc).__name__)
            return
        per_pair: dict[tuple[str, str], list[int]] = {}
        for field, value in raw.items():
            endpoint, status, index = field.decode().split("\t")
            counts = per_pair.setdefault((endpoint, status), [0] * (len(BUCKETS) + 2))
            counts[int(index)] = int(value)
        requests = CounterMetricFamily(
            "messy_http_requests",
            "Web requests answered, by endpoint (route) and status.",
            labels=["endpoint", "status"],
        )
        per_endpoint: dict[str, list[int]] = {}
        for (endpoint, status), counts in sorted(per_pair.items()):
            requests.add_metric([endpoint, status], sum(counts[:-1]))
            totals = per_endpoint.setdefault(endpoint, [0] * len(counts))
            for index, count in enumerate(counts):
                totals[index] += count
        yield requests
        duration = HistogramMetricFamily(
            "messy_http_request_duration_seconds",
            "Time from a request reaching the web process to its answer, by endpoint.",
            labels=["endpoint"],
        )
        for endpoint, counts in sorted(per_endpoint.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), counts[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            duration.add_metric([endpoint], buckets, sum_value=counts[-1] / 1_000_000)
        yield duration
