"""The front door (scripts/front.sh: nginx) in front of gunicorn, as make run starts it: slow
clients cannot hold the web processes, limits answer in JSON, static files are served."""

import concurrent.futures
import http.client
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from pymemcache.client.base import Client as MemcachedClient

from tests.harness import SlowUploads
from tests.system.stack import KEY_PREFIX, message_body

pytestmark = pytest.mark.system


def timed_write(port: int, i: int) -> tuple[int, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/message/write/", json.dumps(message_body(i)), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    except (TimeoutError, OSError):
        return 0, time.perf_counter() - started
    finally:
        connection.close()


def test_two_hundred_stalled_uploads_do_not_hold_up_normal_writes(stack):
    stack.start_web(processes=2)
    stack.start_front()
    for i in range(20):  # each web process opens its Redis and memcached connections
        timed_write(stack.front_port, i)
    with SlowUploads(stack.front_port, 200), concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: timed_write(stack.front_port, i), range(500)))
    statuses = [status for status, _ in answers]
    latencies = sorted(seconds for _, seconds in answers)
    assert statuses.count(202) == 500, {s: statuses.count(s) for s in set(statuses)}
    # Held writes would wait for a slow body (seconds, see the next test). The 100 ms target
    # for p99 is a benchmark's (make bench), not a timed test's on a shared machine.
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1, f"p99 {p99 * 1000:.0f} ms"


def test_without_the_front_door_a_few_stalled_uploads_hold_every_web_process(stack):
    """Why the front door is there: gunicorn's sync processes each wait on a stalled body."""
    stack.start_web(processes=2)
    with SlowUploads(stack.web_port, 4):
        status, seconds = timed_write(stack.web_port, 1)
    assert status != 202 or seconds > 5, f"answered {status} in {seconds:.1f} s"


def test_the_front_door_answers_its_own_refusals_in_json(stack):
    stack.start_web(processes=1)
    stack.start_front()
    connection = http.client.HTTPConnection("127.0.0.1", stack.front_port, timeout=10)
    connection.request("POST", "/message/write/", b"x" * 40_000, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"] == "body_too_large"
    connection.close()


def test_one_address_over_its_rate_gets_429_with_retry_after(stack, tmp_path):
    stack.start_web(processes=1)
    stack.start_front("front-limited", FRONT_RATE_PER_IP="2", FRONT_BURST_PER_IP="3")
    port = stack.front_port
    answers = []
    for _ in range(10):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Retry-After"), response.read()))
        connection.close()
    limited = [answer for answer in answers if answer[0] == 429]
    assert limited, [status for status, _, _ in answers]
    _, retry_after, body = limited[0]
    assert retry_after == "1"
    assert json.loads(body)["error"] == "rate_limited"


def test_the_front_door_serves_the_collected_static_files(stack):
    stack.start_web(processes=1)
    stack.start_front()
    connection = http.client.HTTPConnection("127.0.0.1", stack.front_port, timeout=10)
    connection.request("GET", "/static/admin/css/base.css")
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, "run collectstatic (scripts/test.sh does)"
    assert response.getheader("Content-Type") == "text/css"
    assert response.getheader("Server") == "nginx"
    assert b"body" in body


def test_access_logs_name_the_path_but_not_the_query_string(stack, tmp_path):
    """A GET write carries the message in its query and a job page link a signed token: the
    access logs of the front door and of gunicorn keep neither."""
    web_log, front_log = tmp_path / "web-access.log", tmp_path / "front-access.log"
    stack.web(stack.web_port, processes=1, WEB_ACCESS_LOG=str(web_log))
    stack.start_front("front-logged", FRONT_ACCESS_LOG=str(front_log))
    port = stack.front_port
    secrets = {"username": "ada-private", "city": "Secretville", "state": "SX", "message": "very-private-text"}
    for path in (
        "/message/write/?" + "&".join(f"{name}={value}" for name, value in secrets.items()),
        "/tasks/01a213cd-2f86-7b2e-8a01-cc33c932aa4d/?t=signed-page-token-value",
    ):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", path)
        connection.getresponse().read()
        connection.close()
    # Each server writes its line once the answer is out, which may be after the client read it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        log.exists() and log.read_text().count("\n") >= 2 for log in (web_log, front_log)
    ):
        time.sleep(0.1)
    for log in (web_log, front_log):
        text = log.read_text()
        assert "/message/write/" in text and "/tasks/" in text, text
        for secret in (*secrets.values(), "signed-page-token-value"):
            assert secret not in text, f"{log.name} holds {secret!r}"


def test_on_one_host_the_pieces_talk_through_unix_sockets(stack):
    """make run's shape: the front door reaches gunicorn, and gunicorn the staging Redis and
    make run's own memcached (scripts/memcached.sh), through Unix sockets; a write through the
    front is staged, its copy is in that memcached, and /status finds every piece."""
    folder = Path(tempfile.mkdtemp(prefix="messy-one-host-"))
    folder.chmod(0o755)  # memcached runs as nobody, and makes its socket in a folder of its own
    memcached_socket = folder / "memcached" / "memcached.sock"
    try:
        stack.memcached_on_socket(memcached_socket, name="memcached-socket")
        stack.env = {**stack.env, "MEMCACHED_SERVERS": f"unix:{memcached_socket}"}
        assert stack.env["REDIS_URL"].startswith("unix://"), "make test runs the staging Redis on its socket"
        stack.start_web(processes=1)
        stack.start_front()

        connection = http.client.HTTPConnection("127.0.0.1", stack.front_port, timeout=10)
        connection.request("POST", "/message/write/", json.dumps(message_body(1)), {"Content-Type": "application/json"})
        response = connection.getresponse()
        accepted = json.loads(response.read())
        connection.close()
        assert response.status == 202, accepted

        # The web server holds a copy for up to messages.copies.COPIES_MAX_AGE (20 ms) and sends it
        # with the next ones or once due, so it may land just after the answer.
        memcached = MemcachedClient(str(memcached_socket))
        copy_key, deadline = f"{KEY_PREFIX}:1:staged:{accepted['id']}", time.monotonic() + 5
        while (copy := memcached.get(copy_key)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert copy == b"1"  # the marker: the copy holds nothing of the message
        _, report = stack.get("/status")
        assert report["components"]["memcached"]["servers"] == {f"unix:{memcached_socket}": "ok"}, report
        assert report["components"]["redis"]["status"] == "ok", report
    finally:
        stack.stop_all()
        shutil.rmtree(folder, ignore_errors=True)
