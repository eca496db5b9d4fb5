"""The client's batching, splitting and retrying, against a scripted HTTP server on 127.0.0.1
(the live service cannot be made to answer 413, 429 or 503 on cue; tests/system/test_client.py
runs the client against the real one)."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from client.messy_client import MessyClient, MessyError

MESSAGE = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next scripted (status, headers, body), or, when the script
    is empty, like Messy would: 202 for every message of a batch. Records what it received."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.received: list[dict[str, Any]] = []
        self.batch_limit: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body: Any = json.loads(raw) if raw else None
        self.server.received.append(
            {"path": self.path, "key": self.headers.get("Idempotency-Key"), "body": body, "at": time.monotonic()}
        )
        if self.server.script:
            status, headers, answer = self.server.script.pop(0)
        elif self.server.batch_limit is not None and len(body) > self.server.batch_limit:
            status, headers, answer = 413, {}, {"error": "too_many_items", "message": "Too many."}
        elif isinstance(body, list):
            results = [{"index": i, "status": "accepted", "id": str(uuid.uuid4())} for i in range(len(body))]
            status, headers, answer = 202, {}, {"accepted": len(body), "rejected": 0, "results": results}
        else:
            status, headers, answer = 202, {}, {"id": str(uuid.uuid4()), "status": "accepted"}
        encoded = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)


@pytest.fixture
def server() -> Iterator[Scripted]:
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def messages(count: int) -> list[dict[str, str]]:
    return [{**MESSAGE, "message": f"message {i}"} for i in range(count)]


def test_batches_hold_at_most_max_items_messages(server):
    results = MessyClient(server.url, max_items=100).write_many(messages(250))
    assert [len(r["body"]) for r in server.received] == [100, 100, 50]
    assert [r["index"] for r in results] == list(range(250))
    assert len({r["key"] for r in server.received}) == 3, "one Idempotency-Key per batch"


def test_batches_hold_at_most_max_bytes(server):
    items = messages(40)
    one = len(json.dumps(items[0]))
    MessyClient(server.url, max_bytes=10 * one + 20).write_many(items)
    for request in server.received:
        assert len(json.dumps(request["body"], separators=(",", ":"))) <= 10 * one + 20
    assert sum(len(r["body"]) for r in server.received) == 40


def test_a_batch_refused_with_413_is_split_in_two_until_it_fits(server):
    server.batch_limit = 30
    results = MessyClient(server.url).write_many(messages(100))
    assert [r["status"] for r in results] == ["accepted"] * 100
    assert [r["index"] for r in results] == list(range(100))
    sizes = [len(r["body"]) for r in server.received]
    assert sizes[0] == 100 and max(s for s in sizes[1:] if s <= 30) <= 30
    assert sum(s for s in sizes if s <= 30) == 100


def test_a_single_message_refused_with_413_is_reported_rejected(server):
    server.batch_limit = 0
    results = MessyClient(server.url).write_many(messages(2))
    assert [(r["index"], r["status"]) for r in results] == [(0, "rejected"), (1, "rejected")]
    assert results[0]["fields"] == {"__all__": ["Too many."]}


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_is_retried_after_retry_after_with_the_same_idempotency_key(server, status):
    busy = {"error": "backlog_full", "message": "Retry later."}
    server.script = [(status, {"Retry-After": "1"}, busy), (status, {"Retry-After": "0"}, busy)]
    results = MessyClient(server.url).write_many(messages(3))
    assert [r["status"] for r in results] == ["accepted"] * 3
    first, second, third = server.received
    assert first["key"] == second["key"] == third["key"]
    assert second["at"] - first["at"] >= 0.95, "Retry-After was not honoured"


def test_a_single_write_is_retried_with_the_same_idempotency_key(server):
    server.script = [(503, {"Retry-After": "0"}, {"error": "staging_unavailable", "message": "Later."})]
    answer = MessyClient(server.url).write("ada", "London", "LDN", "hello", idempotency_key="order-42")
    assert answer["status"] == "accepted"
    assert [r["key"] for r in server.received] == ["order-42", "order-42"]


def test_retries_are_bounded_in_number(server):
    server.script = [(503, {"Retry-After": "0"}, {"error": "backlog_full", "message": "Later."})] * 10
    with pytest.raises(MessyError) as raised:
        MessyClient(server.url, max_retries=2).write_many(messages(1))
    assert raised.value.status == 503
    assert len(server.received) == 3


def test_retries_are_bounded_in_total_wait(server):
    server.script = [(429, {"Retry-After": "30"}, {"error": "rate_limited", "message": "Later."})] * 3
    started = time.monotonic()
    with pytest.raises(MessyError):
        MessyClient(server.url, max_wait=10).write("ada", "London", "LDN", "hello")
    assert time.monotonic() - started < 5
    assert len(server.received) == 1


def test_an_unreachable_server_is_retried_then_reported():
    client = MessyClient("http://127.0.0.1:1", max_retries=2, backoff=0.01, timeout=1)
    with pytest.raises(MessyError) as raised:
        client.write("ada", "London", "LDN", "hello")
    assert raised.value.status == 0


def test_a_refusal_is_raised_with_its_error_code(server):
    server.script = [(400, {}, {"error": "invalid_message", "message": "Bad.", "fields": {"city": ["Required."]}})]
    with pytest.raises(MessyError) as raised:
        MessyClient(server.url).write("ada", "", "LDN", "hello")
    assert (raised.value.status, raised.value.error) == (400, "invalid_message")


def test_per_item_rejections_come_back_at_their_input_positions(server):
    accepted = [{"index": i, "status": "accepted", "id": "x"} for i in (0, 1)]
    rejected = [{"index": 0, "status": "rejected", "fields": {"city": ["Required."]}}]
    server.script = [
        (202, {}, {"accepted": 2, "rejected": 0, "results": accepted}),
        (400, {}, {"error": "no_valid_messages", "accepted": 0, "rejected": 1, "results": rejected}),
    ]
    results = MessyClient(server.url, max_items=2).write_many(messages(3))
    assert [(r["index"], r["status"]) for r in results] == [(0, "accepted"), (1, "accepted"), (2, "rejected")]


def test_status_is_none_for_an_unknown_id(server):
    server.script = [(404, {}, {"error": "message_not_found", "message": "No."})]
    assert MessyClient(server.url).status(str(uuid.uuid4())) is None
