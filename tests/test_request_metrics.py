"""Web requests by endpoint and status, live workers by pool and Redis memory on /metrics
(project.request_metrics, project.workers, project.metrics)."""

import io
import time
from collections.abc import Iterator

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from project import request_metrics, workers
from project.redis import redis_client
from project.wsgi import application
from tests.test_metrics import scrape, value

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_counts_of_other_tests() -> Iterator[None]:
    request_metrics._pending.clear()
    # Django's handler closes the database connection at the end of a request: the test's own.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def wsgi_call(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> str:
    """One request through the WSGI application web processes serve; returns its status line."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "REMOTE_ADDR": "127.0.0.1",
    }
    statuses: list[str] = []
    response = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(response)
    getattr(response, "close", lambda: None)()
    return statuses[0]


def test_requests_are_counted_by_route_and_status_on_the_lean_path_and_djangos():
    message = b'{"username": "ada", "city": "London", "state": "LDN", "message": "hi"}'
    assert wsgi_call("POST", "/message/write/", message).startswith("202")
    assert wsgi_call("POST", "/message/write", message).startswith("202")  # the same endpoint
    assert wsgi_call("POST", "/message/write/", b"{").startswith("400")
    assert wsgi_call("GET", "/message/0190a5c8-0000-7000-8000-000000000000/").startswith("404")
    assert wsgi_call("GET", "/no/such/page").startswith("404")
    request_metrics.request_metrics_flush()

    samples = scrape()
    assert value(samples, "messy_http_requests_total", endpoint="/message/write/", status="202") == 2
    assert value(samples, "messy_http_requests_total", endpoint="/message/write/", status="400") == 1
    assert value(samples, "messy_http_requests_total", endpoint="/message/<uuid:message_id>/", status="404") == 1
    assert value(samples, "messy_http_requests_total", endpoint="unmatched", status="404") == 1
    assert value(samples, "messy_http_request_duration_seconds_count", endpoint="/message/write/") == 3
    assert value(samples, "messy_http_request_duration_seconds_bucket", endpoint="/message/write/", le="+Inf") == 3
    assert 0 < value(samples, "messy_http_request_duration_seconds_sum", endpoint="/message/write/") < 3


def test_counts_of_many_processes_add_up_in_redis():
    request_metrics.request_observe("/message/batch/", "202", 0.002)
    request_metrics.request_metrics_flush()
    request_metrics.request_observe("/message/batch/", "202", 0.3)
    request_metrics.request_metrics_flush()
    samples = scrape()
    assert value(samples, "messy_http_requests_total", endpoint="/message/batch/", status="202") == 2
    assert value(samples, "messy_http_request_duration_seconds_bucket", endpoint="/message/batch/", le="0.0025") == 1
    assert value(samples, "messy_http_request_duration_seconds_bucket", endpoint="/message/batch/", le="0.5") == 2


def test_counts_survive_a_redis_error_until_the_next_flush(monkeypatch):
    request_metrics.request_observe("/message/batch/", "202", 0.002)

    def refuse() -> None:
        raise request_metrics.redis.ConnectionError("down")

    monkeypatch.setattr(request_metrics, "redis_client", refuse)
    request_metrics.request_metrics_flush()
    monkeypatch.undo()
    request_metrics.request_metrics_flush()
    assert value(scrape(), "messy_http_requests_total", endpoint="/message/batch/", status="202") == 1


def test_live_workers_are_counted_by_pool_and_a_silent_one_drops_out():
    workers.worker_alive("ingest|ingest@a:1|2")
    workers.worker_alive("ingest|ingest@b:7|4")
    samples = scrape()
    assert value(samples, "messy_workers_live", pool="ingest") == 2
    assert value(samples, "messy_worker_pool_processes", pool="ingest") == 6
    assert value(samples, "messy_workers_live", pool="jobs") == 0, "a pool with none alive is a 0, not missing"

    # A worker killed with -9: its last heartbeat expires.
    redis_client().zadd(workers.workers_key(), {"ingest|ingest@b:7|4": int(time.time() * 1000) - 1})
    assert value(scrape(), "messy_workers_live", pool="ingest") == 1


def test_redis_memory_and_its_limit_are_reported_for_both_servers():
    samples = scrape()
    for role in ("staging", "broker"):
        assert value(samples, "messy_redis_memory_used_bytes", role=role) > 0
        assert value(samples, "messy_redis_memory_max_bytes", role=role) >= 0


def test_the_metrics_page_itself_is_counted():
    assert wsgi_call("GET", "/metrics").startswith("200")
    request_metrics.request_metrics_flush()
    assert value(scrape(), "messy_http_requests_total", endpoint="/metrics", status="200") == 1
