"""The client's batching, splitting, retrying, ids, compression, connection reuse and jobs,
against a scripted HTTP server on 127.0.0.1 (the live service cannot be made to answer 413, 429
or 503 on cue; tests/client/test_live.py runs the client against the real one)."""

import email.utils
import gzip
import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from client.messy_client import MessyClient, MessyError, cli, uuid7

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
    protocol_version = "HTTP/1.1"  # keep-alive, as the front door offers it

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.server.received.append(
            {
                "path": self.path,
                "key": self.headers.get("Idempotency-Key"),
                "body": body,
                "at": time.monotonic(),
                "peer": self.client_address[1],
                "headers": dict(self.headers),
                "size": len(raw),
            }
        )
        if self.server.script:
            status, headers, answer = self.server.script.pop(0)
            if status == -1:
                self.close_connection = True
                return
        elif self.server.batch_limit is not None and len(body) > self.server.batch_limit:
            status, headers, answer = 413, {}, {"error": "too_many_items", "message": "Too many."}
        elif self.path.startswith("/tasks/"):
            status, headers, answer = 202, {}, {"id": "job-1", "status": "queued"}
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


# --- ids, compression, the connection ----------------------------------------------------------


def test_each_message_gets_a_uuid7_id_that_its_retries_keep(server):
    server.script = [(503, {"Retry-After": "0"}, {"error": "backlog_full", "message": "Later."})]
    items = messages(3)
    items[1] = {**items[1], "id": "0190a5c8-0000-7000-8000-00000000abcd"}
    results = MessyClient(server.url).write_many(items)
    first, retry = server.received
    assert first["body"] == retry["body"], "a retry must send the very same messages, ids included"
    ids = [item["id"] for item in first["body"]]
    assert ids[1] == "0190a5c8-0000-7000-8000-00000000abcd", "a given id is kept"
    assert all(uuid.UUID(i).version == 7 for i in (ids[0], ids[2]))
    assert len(set(ids)) == 3
    assert [r["client_id"] for r in results] == ids


def test_a_single_write_mints_an_id_unless_given(server):
    client = MessyClient(server.url)
    minted = client.write("ada", "London", "LDN", "hello")
    given = client.write("ada", "London", "LDN", "hello", id="0190a5c8-0000-7000-8000-00000000abcd")
    assert uuid.UUID(server.received[0]["body"]["id"]).version == 7
    assert minted["client_id"] == server.received[0]["body"]["id"]
    assert server.received[1]["body"]["id"] == given["client_id"] == "0190a5c8-0000-7000-8000-00000000abcd"


def test_a_batch_is_sent_gzipped_and_a_small_write_is_not(server):
    client = MessyClient(server.url)
    client.write_many(messages(200))
    client.write("ada", "London", "LDN", "hello")
    batch, single = server.received
    assert batch["headers"].get("Content-Encoding") == "gzip"
    assert int(batch["headers"]["Content-Length"]) * 4 < batch["size"], "a batch should shrink several times"
    assert "Content-Encoding" not in single["headers"]


def test_one_connection_carries_every_request(server):
    client = MessyClient(server.url, max_items=10)
    client.write_many(messages(50))
    client.write("ada", "London", "LDN", "hello")
    server.script = [(404, {}, {"error": "message_not_found", "message": "No."})]
    client.status(str(uuid.uuid4()))
    assert len(server.received) == 7
    assert len({r["peer"] for r in server.received}) == 1
    assert client.connections_opened == 1


def test_retry_after_as_an_http_date_is_honoured(server):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.script = [(503, {"Retry-After": when}, {"error": "backlog_full", "message": "Later."})]
    MessyClient(server.url).write("ada", "London", "LDN", "hello")
    first, second = server.received
    assert second["at"] - first["at"] >= 0.9


def test_a_server_that_closes_the_connection_mid_answer_is_retried_on_a_new_one(server):
    server.script = [(-1, {}, None)]  # the handler drops the connection without answering
    answer = MessyClient(server.url, backoff=0.01).write("ada", "London", "LDN", "hello", idempotency_key="k-1")
    assert answer["status"] == "accepted"
    first, second = server.received
    assert first["key"] == second["key"] == "k-1"
    assert first["body"]["id"] == second["body"]["id"]


# --- jobs --------------------------------------------------------------------------------------


def test_an_import_uploads_the_file_with_its_type_and_reports_progress(server, tmp_path):
    path = tmp_path / "rows.ndjson"
    path.write_bytes(b"".join(json.dumps(m).encode() + b"\n" for m in messages(3000)))
    seen: list[tuple[int, int]] = []
    client = MessyClient(server.url, token="t0k")
    job = client.import_file(path, progress=lambda sent, total: seen.append((sent, total)))
    assert job["id"] == "job-1"
    (upload,) = server.received
    assert upload["path"] == "/tasks/import/?name=rows.ndjson"
    assert upload["headers"]["Content-Type"] == "application/x-ndjson"
    assert upload["headers"]["Authorization"] == "Bearer t0k"
    assert upload["size"] == path.stat().st_size
    size = path.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen) and len(seen) > 2


def test_an_import_is_not_sent_again_after_a_lost_answer(server, tmp_path):
    """The server may have started the job: a second upload would import the file twice."""
    path = tmp_path / "rows.csv"
    path.write_text("username,city,state,message\nada,London,LDN,hi\n")
    server.script = [(-1, {}, None)]
    with pytest.raises(MessyError) as raised:
        MessyClient(server.url, token="t", backoff=0.01).import_file(path)
    assert raised.value.status == 0
    assert len(server.received) == 1


def test_an_import_refused_for_now_is_sent_again(server, tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(messages(2)))
    server.script = [(503, {"Retry-After": "0"}, {"error": "staging_unavailable", "message": "Later."})]
    MessyClient(server.url, token="t").import_file(path)
    assert [r["headers"]["Content-Type"] for r in server.received] == ["application/json"] * 2


def test_waiting_for_a_job_polls_until_it_has_finished(server):
    running = {"id": "j", "status": "running", "progress": {"done": 1, "total": 3}}
    server.script = [(200, {}, running), (200, {}, running), (200, {}, {**running, "status": "succeeded"})]
    seen: list[str] = []
    client = MessyClient(server.url, token="t")
    job = client.wait_job("j", interval=0.01, on_progress=lambda j: seen.append(j["status"]))
    assert job["status"] == "succeeded"
    assert seen == ["running", "running", "succeeded"]
    assert {r["path"] for r in server.received} == {"/tasks/jobs/j/"}


def test_an_erasure_is_started_with_the_username(server):
    MessyClient(server.url, token="t").erase("ada")
    assert server.received[0]["path"] == "/tasks/erase/"
    assert server.received[0]["body"] == {"username": "ada"}


# --- the command line --------------------------------------------------------------------------


def test_the_command_line_writes_a_batch_file_and_says_what_was_refused(server, tmp_path, capsys):
    path = tmp_path / "rows.ndjson"
    path.write_text("".join(json.dumps(m) + "\n" for m in messages(5)) + "\n")
    assert cli.main(["--url", server.url, "batch", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["accepted"], printed["rejected"]) == (5, 0)
    assert len(server.received[0]["body"]) == 5

    rejected = [{"index": 0, "status": "rejected", "fields": {"city": ["Required."]}}]
    server.script = [(400, {}, {"error": "no_valid_messages", "accepted": 0, "rejected": 1, "results": rejected})]
    assert cli.main(["--url", server.url, "batch", str(path)]) == 1


def test_the_command_line_writes_one_message_and_waits_for_a_job(server, capsys):
    assert cli.main(["--url", server.url, "write", "ada", "London", "LDN", "hello"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "accepted"
    server.script = [(200, {}, {"id": "j", "status": "running"}), (200, {}, {"id": "j", "status": "failed"})]
    assert cli.main(["--url", server.url, "--token", "t", "job", "j", "--wait"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "failed"


def test_the_command_line_reports_a_refusal_on_stderr(server, capsys):
    server.script = [(400, {}, {"error": "invalid_message", "message": "Bad."})]
    assert cli.main(["--url", server.url, "write", "ada", "", "LDN", "hello"]) == 1
    assert "invalid_message" in capsys.readouterr().err


def test_over_https_one_connection_and_one_handshake_carry_every_request(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = Scripted()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        client = MessyClient(url, ssl_context=ssl.create_default_context(cafile=str(cert)), max_items=10)
        client.write_many(messages(40))
        client.write("ada", "London", "LDN", "hello")
        assert len(server.received) == 5
        assert len({r["peer"] for r in server.received}) == 1
        assert client.connections_opened == 1
        started = time.monotonic()
        with pytest.raises(MessyError) as raised:  # a certificate it does not trust: refused, not retried
            MessyClient(url, backoff=1).write("ada", "London", "LDN", "hello")
        assert (raised.value.status, raised.value.error) == (0, "tls_verify_failed")
        assert time.monotonic() - started < 0.9
    finally:
        server.shutdown()
        server.server_close()


def test_minted_ids_are_uuid7s_in_time_order():
    first = uuid7()
    time.sleep(0.002)
    later = [uuid7() for _ in range(100)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in later)
    assert all(first < i for i in later)
    assert len(set(later)) == 100
