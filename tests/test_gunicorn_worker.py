"""project.gunicorn_worker: runserver.sh's worker answers a request with one send where gunicorn
makes two, in the right order whatever the response (a body, none, a file, a 100-continue), and
refreshes its heartbeat at most once a HEARTBEAT_SECONDS, and closes a connection without
waiting for the peer when nothing is left unread. Driven through gunicorn's own request
handling (SyncWorker.handle) over a real socket pair; the tests through runserver.sh (tests/system)
cover the same worker under a real arbiter."""

import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import gunicorn
import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from project import gunicorn_worker
from project.gunicorn_worker import ResponseSocket, SyncWorker
from tests.clock import StoppedClock

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RecordedSocket:
    """A real socket that records what is passed to its sendall()."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.sent.append(bytes(data))
        self.socket.sendall(data, flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)


def worker_for(app: WsgiApp, timeout: float = 15) -> SyncWorker:
    config = Config()
    config.set("accesslog", None)
    worker = SyncWorker(0, os.getpid(), [], None, timeout, config, Logger(config))
    worker.wsgi = app
    return worker


def exchange(app: WsgiApp, request: bytes, then_end: bool = False) -> tuple[list[bytes], bytes]:
    """One request through the worker's handle(): what gunicorn's sendall() calls were, and what
    the client read up to the end of the connection. then_end: the client sends nothing more."""
    server, client = socket.socketpair()
    listener, _ = socket.socketpair()
    recorded = RecordedSocket(server)
    try:
        client.sendall(request)
        if then_end:
            client.shutdown(socket.SHUT_WR)
        worker_for(app).handle(listener, recorded, ("127.0.0.1", 40000))
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return recorded.sent, received
    finally:
        for sock in (server, client, listener, _):
            sock.close()


def answering(status: str, body: list[bytes], headers: list[tuple[str, str]] | None = None) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"].read()
        length = str(sum(map(len, body)))
        start_response(status, headers or [("Content-Type", "application/json"), ("Content-Length", length)])
        return body

    return app


POST = b"POST /message/write/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"


def test_a_response_goes_out_in_one_send():
    sent, received = exchange(answering("202 Accepted", [b'{"status":"accepted"}']), POST)
    assert len(sent) == 1
    assert sent[0] == received
    assert received.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert received.endswith(b'\r\n\r\n{"status":"accepted"}')


def test_the_projects_own_answers_go_out_in_one_send(settings):
    from project.wsgi import application

    request = b"GET /message/noop/ HTTP/1.1\r\nHost: testserver\r\n\r\n"
    sent, received = exchange(application, request)
    assert len(sent) == 1
    assert received.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert b"\r\nX-Request-ID: " in received
    assert received.endswith(b'\r\n\r\n{"status":"ok"}')


def test_a_body_of_several_chunks_follows_the_headers_in_order():
    streamed = answering("200 OK", [b"one ", b"two ", b"three"], headers=[("Content-Type", "text/plain")])
    sent, received = exchange(streamed, POST)
    # Chunked (no Content-Length): the headers go out with the first chunk, then one send a chunk
    # and the last, empty, chunk.
    assert len(sent) == 4
    assert received.endswith(b"\r\n\r\n4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n")


def test_a_response_without_a_body_goes_out_on_close():
    sent, received = exchange(answering("204 No Content", []), POST)
    assert sent == [received]
    assert received.startswith(b"HTTP/1.1 204 No Content\r\n") and received.endswith(b"\r\n\r\n")


def test_a_file_sent_with_sendfile_follows_its_headers():
    with tempfile.TemporaryFile() as file:
        file.write(b"the file's bytes")
        file.seek(0)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "16")])
            return environ["wsgi.file_wrapper"](file)

        sent, received = exchange(app, b"GET /f HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\nthe file's bytes")
    assert len(sent) == 1  # the headers; the body went through sendfile()


def test_a_100_continue_comes_before_the_response():
    request = b"POST /message/write/ HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
    _, received = exchange(answering("202 Accepted", [b"{}"]), request)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n")
    assert received.endswith(b"\r\n\r\n{}")


def test_what_is_held_goes_out_before_any_other_use_of_the_socket():
    server, client = socket.socketpair()
    with server, client:
        response = ResponseSocket(server)
        response.sendall(b"held ")
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(100)
        response.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # any other use
        assert client.recv(100) == b"held "
        response.sendall(b"then straight through")
        assert client.recv(100) == b"then straight through"


def test_a_connection_read_to_its_end_is_closed_without_waiting_for_the_peer():
    # gunicorn >= 26 lingers in util.close_graceful() until the peer closes (up to 2 s); the
    # client here reads only once handle() has returned, so a linger shows as that wait.
    started = time.monotonic()
    _, received = exchange(answering("202 Accepted", [b"{}"]), POST)
    assert time.monotonic() - started < 1
    assert received.endswith(b"\r\n\r\n{}")


def test_a_connection_with_request_bytes_unread_still_gets_its_whole_response():
    # The application answers without reading the body: a plain close() with those bytes
    # unread would be a reset, which may cut the response short. gunicorn's linger reads them.
    request = b"POST /message/write/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n"

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("413 Content Too Large", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]

    # More than the parser reads before the application runs, less than gunicorn drains (64 KiB);
    # the client sends no more, so the linger ends at once.
    _, received = exchange(app, request + b"x" * 30_000, then_end=True)
    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.endswith(b"\r\n\r\n{}")


def test_after_a_shutdown_with_nothing_unread_the_socket_reads_as_ended():
    server, client = socket.socketpair()
    with server, client:
        response = ResponseSocket(server)
        response.sendall(b"held")
        response.shutdown(socket.SHUT_WR)
        response.settimeout(2.0)
        assert response.recv(4096) == b""
        response.close()
        assert client.recv(100) == b"held"
        assert client.recv(100) == b""


# What the worker overrides or relies on in gunicorn's sync worker, to read again in a new major
# release's source before moving the pin (docs/dependencies.md says what changed up to 27).
OVERRIDE_POINTS = (
    "SyncWorker.init_process/notify/wait/accept/handle/run (gunicorn/workers/sync.py, base.py)",
    "ResponseSocket: Response.send_headers/write/write_file/close and the 100-continue send"
    " (gunicorn/http/wsgi.py), SocketUnreader's recv (gunicorn/http/unreader.py)",
    "ResponseSocket.shutdown/settimeout: util.close_graceful and its callers in sync.py",
)
TESTED_MAJOR = 27


def test_gunicorn_is_the_major_release_the_worker_was_checked_against():
    major = int(gunicorn.__version__.split(".")[0])
    assert major == TESTED_MAJOR, (
        f"gunicorn {gunicorn.__version__}, the worker was checked against {TESTED_MAJOR}.x: recheck "
        + "; ".join(OVERRIDE_POINTS)
        + ", then set TESTED_MAJOR"
    )


def heartbeats(monkeypatch, timeout: float) -> tuple[SyncWorker, StoppedClock, list[float]]:
    """A worker on a clock the test moves, and the times its heartbeat file was refreshed."""
    clock = StoppedClock(1000.0)
    monkeypatch.setattr(gunicorn_worker, "time", clock)
    worker = worker_for(answering("200 OK", []), timeout=timeout)
    refreshed: list[float] = []
    monkeypatch.setattr(worker.tmp, "notify", lambda: refreshed.append(clock.monotonic()))
    return worker, clock, refreshed


def test_the_heartbeat_is_refreshed_at_most_once_a_heartbeat_period(monkeypatch):
    worker, clock, refreshed = heartbeats(monkeypatch, timeout=15)
    for _ in range(100):
        worker.notify()
    assert refreshed == [1000.0]
    clock.advance(gunicorn_worker.HEARTBEAT_SECONDS)
    worker.notify()
    assert refreshed == [1000.0, 1000.0 + gunicorn_worker.HEARTBEAT_SECONDS]


def test_a_short_timeout_gets_a_heartbeat_well_within_it(monkeypatch):
    worker, clock, refreshed = heartbeats(monkeypatch, timeout=1)  # --timeout 2
    worker.notify()
    clock.advance(0.5)
    worker.notify()
    assert refreshed == [1000.0, 1000.5]
