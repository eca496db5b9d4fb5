"""The front door (scripts/front.sh: nginx) in front of gunicorn, as make run starts it: slow
clients cannot hold the web processes, limits answer in JSON, static files are served."""

import concurrent.futures
import contextlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pymemcache.client.base import Client as MemcachedClient

from tests.harness import SlowUploads, free_port, wait_for_port
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


# --- the API's contract through the front door (issue 20) ------------------------------------


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    source: str | None = None,
    tls: bool = False,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a connection of its own: status, headers and body."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=30, context=context, source_address=(source, 0) if source else None
        )
    else:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30, source_address=(source, 0) if source else None
        )
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def raw_request(port: int, request: bytes) -> tuple[int, str, bytes]:
    """Bytes as they are (what http.client would refuse to send): status, content type, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    content_type = next(
        (line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type:")), ""
    )
    return int(lines[0].split()[1]), content_type, body


def test_paths_without_the_trailing_slash_answer_as_the_slash_ones(stack):
    """Before: nginx's exact locations sent them to the catch-all, whose 4 MiB limit applied,
    and a GET got nginx's HTML 301."""
    stack.start_web(processes=1)
    stack.start_front()
    port, json_type = stack.front_port, {"Content-Type": "application/json"}
    for path in ("/message/write/", "/message/write"):
        status, _, body = call(port, "POST", path, json.dumps(message_body(1)).encode(), json_type)
        assert status == 202, body
        status, headers, body = call(port, "GET", f"{path}?username=ada&city=Paris&state=IDF&message=hi")
        assert (status, headers["Content-Type"]) == (202, "application/json"), body
        status, _, body = call(port, "POST", path, b"x" * 40_000, json_type)
        assert (status, json.loads(body)["error"]) == (413, "body_too_large"), path
    for path in ("/message/batch/", "/message/batch"):
        status, _, body = call(port, "POST", path, json.dumps([message_body(2)]).encode(), json_type)
        assert status == 202, body


def test_every_refusal_of_the_front_door_itself_is_json(stack):
    stack.start_web(processes=1)
    stack.start_front()
    port = stack.front_port
    refusals = {
        "nul in the path": (b"GET /message/%00/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
        "bad escape": (b"GET /message/%zz/../../ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
        "no host": (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        "line too long": (
            b"GET /?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            414,
        ),
        "static post": (
            b"POST /static/admin/css/base.css HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            405,
        ),
        "import unauthenticated": (
            b"POST /tasks/import/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            401,
        ),
        "import bad token": (
            b"POST /tasks/import/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            403,
        ),
    }
    for name, (request, expected) in refusals.items():
        status, content_type, body = raw_request(port, request)
        assert (status, content_type) == (expected, "application/json"), (name, status, body[:200])
        assert set(json.loads(body)) >= {"error", "message"}, name

    stack.kill("web")  # and with no web tier behind it: 503, not nginx's 502 page
    status, headers, body = call(port, "GET", "/healthz")
    assert (status, headers["Content-Type"], json.loads(body)["error"]) == (503, "application/json", "web_unavailable")
    assert headers["Retry-After"] == "5"


class SilentUpstream:
    """A web host that takes requests and never answers; counts the requests it got."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                self.connections.append(connection)
                self.requests.append(connection.recv(65536).split(b"\r\n", 1)[0])

    def close(self) -> None:
        for connection in [*self.connections, self.server]:
            connection.close()


def test_a_get_write_is_never_sent_to_a_second_web_host(stack):
    """A GET write that timed out may have been staged: nginx, taking GET for idempotent, used
    to send it to the next web host too. Other GETs still fail over."""
    upstreams = [SilentUpstream(), SilentUpstream()]
    try:
        run_dir = Path(tempfile.mkdtemp(prefix="messy-front-"))
        stack.front_port = free_port()
        run_dir.chmod(0o755)
        stack.start(
            "front-silent",
            ["./scripts/front.sh"],
            FRONT_BIND=f"127.0.0.1:{stack.front_port}",
            FRONT_UPSTREAMS=",".join(f"127.0.0.1:{u.port}" for u in upstreams),
            FRONT_RUN_DIR=str(run_dir),
            FRONT_ACCESS_LOG="off",
            WEB_TIMEOUT="1",
        )
        wait_for_port(stack.front_port)
        status, _, _ = call(stack.front_port, "GET", "/message/write/?username=a&city=b&state=c&message=once")
        assert status == 503
        assert sum(len(u.requests) for u in upstreams) == 1, [u.requests for u in upstreams]
        status, _, _ = call(stack.front_port, "GET", "/healthz")
        assert status == 503
        assert sum(len(u.requests) for u in upstreams) == 3, [u.requests for u in upstreams]
    finally:
        for upstream in upstreams:
            upstream.close()


def test_an_upload_without_credentials_is_refused_before_nginx_spools_its_body(stack):
    """Before: nginx buffered up to 100 MB of an anonymous upload to disk before Django checked
    the token; a byte every 9 s kept it there."""
    stack.start_web(processes=1)
    run_dir = Path(tempfile.mkdtemp(prefix="messy-front-"))
    stack.front_port = free_port()
    stack.front(
        stack.front_port,
        stack.web_port,
        run_dir,
        "front-import",
        through_socket=stack.sockets["web"],
        FRONT_ERROR_LOG_LEVEL="info",
    )
    declared, sent = 50 * 1024 * 1024, 0
    with socket.create_connection(("127.0.0.1", stack.front_port), timeout=10) as client:
        client.sendall(
            b"POST /tasks/import/?format=ndjson HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
        )
        client.settimeout(0.2)
        answer = b""
        while sent < declared and b"\r\n\r\n" not in answer:
            with contextlib.suppress(OSError):
                client.sendall(b"{}\n" * 65536)
                sent += 3 * 65536
            with contextlib.suppress(TimeoutError):
                answer += client.recv(65536)
        spooled = sum(f.stat().st_size for f in (run_dir / "client_body").rglob("*") if f.is_file())
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"application/json" in answer
    assert sent < declared, "the whole body was read before the answer"
    assert spooled == 0, f"{spooled:,} bytes spooled"


# --- behind a TLS load balancer (issue 21) ---------------------------------------------------

PRODUCTION = {
    "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SESSION_COOKIE_SECURE": "1",
    "DJANGO_CSRF_COOKIE_SECURE": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "3600",
}


def load_balancer(stack, front_port: int, folder: Path) -> int:
    """A second nginx on 127.0.0.1 that terminates TLS (a self-signed certificate) and sets
    X-Forwarded-For and X-Forwarded-Proto, as a cloud load balancer does; returns its port."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(folder / "lb.key"),
            "-out",
            str(folder / "lb.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    (folder / "lb.conf").write_text(f"""
pid {folder}/lb.pid;
error_log {folder}/lb-error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {folder}/lb.pem;
        ssl_certificate_key {folder}/lb.key;
        location / {{
            proxy_pass http://127.0.0.1:{front_port};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
""")
    stack.start("lb", ["nginx", "-p", str(folder), "-c", str(folder / "lb.conf"), "-g", "daemon off;"])
    wait_for_port(port)
    return port


def test_behind_a_tls_load_balancer_clients_keep_their_own_address_and_scheme(stack, tmp_path):
    """The front door behind a load balancer, the production block on. Two clients (two
    loopback addresses) get separate quotas and failure counts, and HTTPS causes no redirect
    loop. Before: every client was the balancer's address, and every request got a 301 to itself."""
    tmp_path.chmod(0o755)
    stack.env = {
        **stack.env,
        **PRODUCTION,
        "MESSY_QUOTA_RATE": "0.001",
        "MESSY_QUOTA_BURST": "3",
        "MESSY_AUTH_FAILURES_MAX": "3",
    }
    stack.start_web(processes=1)
    stack.start_front("front-behind-lb", FRONT_TRUSTED_LBS="127.0.0.1")
    lb = load_balancer(stack, stack.front_port, tmp_path)
    alice, bob = "127.0.0.2", "127.0.0.3"
    json_type = {"Content-Type": "application/json"}

    def write(client: str) -> int:
        return call(
            lb, "POST", "/message/write/", json.dumps(message_body(1)).encode(), json_type, source=client, tls=True
        )[0]

    # The front door on its own (plain http, no balancer) is redirected: the setting is on.
    status, headers, _ = call(stack.front_port, "GET", "/tasks/jobs/")
    assert (status, headers["Location"][:8]) == (301, "https://")

    assert [write(alice) for _ in range(4)] == [202, 202, 202, 429]
    assert write(bob) == 202

    token = stack.api_token("read")
    wrong = [
        call(lb, "GET", "/tasks/jobs/", headers={"Authorization": f"Bearer wrong-{i}"}, source=alice, tls=True)[0]
        for i in range(4)
    ]
    assert wrong == [403, 403, 403, 429]
    status, headers, body = call(
        lb, "GET", "/tasks/jobs/", headers={"Authorization": f"Bearer {token}"}, source=bob, tls=True
    )
    assert status == 200, body
    assert "max-age=3600" in headers["Strict-Transport-Security"]


def test_per_address_limits_count_an_ipv6_client_by_its_64(stack):
    """A client holding a /64 cannot take a fresh address (and a fresh quota) per request."""
    stack.start_web(processes=1)
    # The test's own connection plays the load balancer, naming the client's address.
    stack.start_front("front-v6", FRONT_TRUSTED_LBS="127.0.0.1", FRONT_RATE_PER_IP="1", FRONT_BURST_PER_IP="2")

    def healthz(address: str) -> int:
        return call(stack.front_port, "GET", "/healthz", headers={"X-Forwarded-For": address})[0]

    assert healthz("198.51.100.1") == 200  # the web process's first answer may take a second
    same_64 = ["2001:db8:1:2::a", "2001:DB8:1:2:0:0:0:b", "2001:db8:1:2:ffff::1", "2001:db8:1:2:1:2:3:4"]
    assert [healthz(address) for address in same_64] == [200, 200, 200, 429]
    assert healthz("2001:db8:1:3::a") == 200
    # 2001:db8:0:0::/64, as nginx writes its addresses: the zeros written out, or in "::".
    written_apart = ["2001:db8:0:0:1::", "2001:db8::1:2:3:4", "2001:db8:0:0:5::", "2001:db8::9"]
    assert [healthz(address) for address in written_apart] == [200, 200, 200, 429]


def test_logs_keep_no_message_and_no_job_link_token(stack, tmp_path):
    """nginx's error log printed the whole request line of each rate-limited request (a GET
    write's message) and of each upstream error (a job page's ?t= token)."""
    tmp_path.chmod(0o755)
    logs = {name: tmp_path / f"{name}.log" for name in ("front-error", "front-access", "web-access")}
    stack.web(stack.web_port, processes=1, WEB_ACCESS_LOG=str(logs["web-access"]))
    stack.start_front(
        "front-quiet",
        FRONT_RATE_PER_IP="1",
        FRONT_BURST_PER_IP="1",
        FRONT_ERROR_LOG=str(logs["front-error"]),
        FRONT_ACCESS_LOG=str(logs["front-access"]),
    )
    query = "username=ada-private&city=Secretville&state=SX&message=very-private-text"
    statuses = [call(stack.front_port, "GET", f"/message/write/?{query}")[0] for _ in range(4)]
    assert 429 in statuses and 202 in statuses, statuses
    time.sleep(1.1)
    call(stack.front_port, "GET", "/tasks/01a213cd-2f86-7b2e-8a01-cc33c932aa4d/?t=signed-page-token-value")
    stack.kill("web")  # an upstream error, with the token in its request line
    time.sleep(1.1)  # past the rate limit
    call(stack.front_port, "GET", "/tasks/01a213cd-2f86-7b2e-8a01-cc33c932aa4d/?t=signed-page-token-value")
    time.sleep(0.5)
    texts = {name: path.read_text() if path.exists() else "" for name, path in logs.items()}
    texts.update({name: stack.log(name) for name in ("web", "front-quiet")})
    assert "/message/write/" in texts["web-access"]
    # One JSON object a line (LOG_FORMAT's default), with the request id, status and duration.
    lines = [json.loads(line) for line in texts["front-access"].splitlines()]
    assert {line["path"] for line in lines} >= {"/message/write/", "/tasks/01a213cd-2f86-7b2e-8a01-cc33c932aa4d/"}
    assert {line["status"] for line in lines} >= {202, 429, 503}
    assert all(line["request_id"] and line["duration"] >= 0 for line in lines)
    for name, text in texts.items():
        for secret in ("very-private-text", "ada-private", "signed-page-token-value"):
            assert secret not in text, f"{name} holds {secret!r}"


def test_one_address_cannot_hold_more_than_its_share_of_open_requests(stack):
    stack.start_web(processes=1)
    stack.start_front("front-conn", FRONT_CONN_PER_IP="3")
    with SlowUploads(stack.front_port, 3):
        time.sleep(0.5)  # nginx has read their headers
        status, headers, body = call(stack.front_port, "GET", "/healthz")
    assert (status, headers["Content-Type"], json.loads(body)["error"]) == (429, "application/json", "rate_limited")
    # Once they are gone (nginx notices the closed connections), the address may connect again.
    deadline = time.monotonic() + 10
    while (status := call(stack.front_port, "GET", "/healthz")[0]) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
