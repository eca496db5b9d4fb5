"""project.gunicorn_worker: runserver.sh's worker answers a request with one send where gunicorn
makes two, in the right order whatever the response (a body, none, a file, a 100-continue), and
refreshes its heartbeat at most once a HEARTBEAT_SECONDS. Driven through gunicorn's own request
handling (SyncWorker.handle) over a real socket pair; the tests through runserver.sh (tests/system)
cover the same worker under a real arbiter."""

import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

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


def exchange(app: WsgiApp, request: bytes) -> tuple[list[bytes], bytes]:
    """One request through the worker's handle(): what gunicorn's sendall() calls were, and what
    the client read up to the end of the connection."""
    server, client = socket.socketpair()
    listener, _ = socket.socketpair()
    recorded = RecordedSocket(server)
    try:
        client.sendall(request)
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
