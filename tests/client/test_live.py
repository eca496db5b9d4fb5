"""The client library (client/messy_client) against the real service: web and workers started by
the run scripts (tests/harness.py). Its retry and split logic on cue is test_messy_client.py's."""

import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from client.messy_client import MessyClient, cli
from tests.harness import ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.system


def stored_ids(stack) -> list[str]:
    connection = stack.db()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id::text FROM message")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def rows(count: int, tag: str = "message") -> list[dict[str, str]]:
    return [
        {"username": f"user{i % 37}", "city": f"city{i % 11}", "state": f"S{i % 5}", "message": f"{tag} {i}"}
        for i in range(count)
    ]


def api_token(stack) -> str:
    created = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "api_token", "create", f"client-{time.time_ns()}", "--scope", "admin"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def test_the_client_writes_thousands_of_messages_that_are_each_stored_exactly_once(stack):
    stack.start_web()
    stack.start_worker()
    stack.start_beat()  # its sweep starts a drain even if the first was published before the worker bound its queue
    # Batches of 1,500 are over the server's 1,000-item limit: each is refused with 413 and
    # sent again as two halves.
    client = MessyClient(f"http://127.0.0.1:{stack.web_port}", max_items=1500)
    messages = rows(4000)
    messages[7] = {**messages[7], "city": ""}

    results = client.write_many(messages)

    assert [r["index"] for r in results] == list(range(4000))
    assert [r["index"] for r in results if r["status"] == "rejected"] == [7]
    assert results[7]["fields"] == {"city": ["This field is required."]}
    accepted = [r["id"] for r in results if r["status"] == "accepted"]
    first = client.write("ada", "London", "LDN", "hello", idempotency_key="order-42")
    again = client.write("ada", "London", "LDN", "hello", idempotency_key="order-42")
    assert again == {**first, "replayed": True}
    accepted.append(first["id"])

    assert client.wait_stored(accepted, timeout=120) == []
    stored = stored_ids(stack)
    assert len(stored) == len(set(stored)) == len(accepted) == 4000
    assert set(stored) == set(accepted)
    status = client.status(first["id"])
    assert status is not None
    assert (status["status"], status["username"], status["message"]) == ("stored", "ada", "hello")
    assert client.status(str(uuid.uuid4())) is None


def test_status_reads_pending_until_a_worker_stores_the_message(stack):
    stack.start_web()
    client = MessyClient(f"http://127.0.0.1:{stack.web_port}")
    message_id = client.write("ada", "London", "LDN", "hello")["id"]
    assert client.status(message_id) == {"status": "pending", "id": message_id}
    assert client.wait_stored([message_id], timeout=1) == [message_id]
    stack.start_worker()
    stack.start_beat()  # its sweep starts a drain even if the first was published before the worker bound its queue
    assert client.wait_stored([message_id], timeout=60) == []


def test_a_web_server_killed_mid_batch_loses_and_duplicates_nothing(stack):
    """kill -9 of every web process while the client's batches are in flight, and a restart a
    moment later: the client retries the batch it was sending with the same Idempotency-Key and
    the same message ids, so each message is stored once."""
    stack.start_web()
    stack.start_worker()
    stack.start_beat()  # its sweep starts a drain even if the first was published before the worker bound its queue
    client = MessyClient(f"http://127.0.0.1:{stack.web_port}", max_items=200, backoff=0.2, max_retries=12)
    killed = threading.Event()

    def kill_and_restart() -> None:
        time.sleep(0.005)  # the next batch is on its way
        stack.kill("web")
        time.sleep(1)
        stack.start_web()

    restart = threading.Thread(target=kill_and_restart)

    def after_batch(done: int) -> None:
        if done >= 3000 and not killed.is_set():
            killed.set()
            restart.start()

    results = client.write_many(rows(8000), on_batch=after_batch)
    restart.join()

    assert killed.is_set() and client.retries >= 1, "the server was not killed while the client wrote"
    assert [r["status"] for r in results] == ["accepted"] * 8000
    accepted = [r["id"] for r in results]
    assert len(set(accepted)) == 8000
    assert client.wait_stored(accepted[-50:], timeout=120) == []
    deadline = time.monotonic() + 120
    while len(stored := stored_ids(stack)) < 8000 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(stored) == len(set(stored)) == 8000, "a message was stored twice or not at all"
    assert set(stored) == set(accepted)


class AnswerDropper:
    """A TCP proxy to the web server that forwards requests whole and, for the request numbers in
    `drop`, reads the server's answer and closes the client's connection without passing it on:
    the server has stored the batch, the client never hears it."""

    def __init__(self, upstream_port: int, drop: set[int]) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.port = free_port()
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            reader = client.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    (int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")),
                    0,
                )
                request = head + reader.read(length)
                self.requests += 1
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as upstream:
                    upstream.sendall(request)
                    answer = b""
                    while chunk := upstream.recv(65536):  # gunicorn closes after each answer
                        answer += chunk
                if self.requests in self.drop:
                    return
                client.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def test_an_answer_lost_after_the_server_accepted_the_batch_is_retried_without_storing_twice(stack):
    stack.start_web()
    stack.start_worker()
    stack.start_beat()  # its sweep starts a drain even if the first was published before the worker bound its queue
    proxy = AnswerDropper(stack.web_port, drop={2, 5})
    try:
        client = MessyClient(f"http://127.0.0.1:{proxy.port}", max_items=500, backoff=0.05)
        results = client.write_many(rows(3000))
    finally:
        proxy.close()
    assert client.retries == 2
    assert proxy.requests == 8  # 6 batches, 2 of them twice
    accepted = [r["id"] for r in results]
    assert [r["status"] for r in results] == ["accepted"] * 3000
    direct = MessyClient(f"http://127.0.0.1:{stack.web_port}")
    assert direct.wait_stored(accepted[-10:], timeout=120) == []
    deadline = time.monotonic() + 120
    while len(stored := stored_ids(stack)) < 3000 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)  # a duplicate would land now
    stored = stored_ids(stack)
    assert len(stored) == len(set(stored)) == 3000
    assert set(stored) == set(accepted)


def test_the_command_line_imports_a_file_and_waits_for_the_job(stack, tmp_path: Path, capsys):
    stack.start_web()
    stack.worker("worker", role="all", concurrency=1)
    token = api_token(stack)
    path = tmp_path / "rows.ndjson"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows(1200, "imported")) + "{broken\n")
    url = f"http://127.0.0.1:{stack.web_port}"

    assert cli.main(["--url", url, "--token", token, "import", str(path)]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["kind"] == "import"
    assert cli.main(["--url", url, "--token", token, "job", job["id"], "--wait", "--wait-timeout", "120"]) == 0
    finished = json.loads(capsys.readouterr().out)
    assert finished["status"] == "succeeded", finished
    assert len(stored_ids(stack)) == 1200

    client = MessyClient(url, token=token)
    seen: list[tuple[int, int]] = []
    again = client.import_file(path, progress=lambda sent, total: seen.append((sent, total)))
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert client.wait_job(again["id"], timeout=120)["status"] == "succeeded"

    erased = client.wait_job(client.erase("user3")["id"], timeout=120)
    assert erased["status"] == "succeeded", erased
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM message WHERE username = 'user3'")
        assert cursor.fetchone() == (0,)
    connection.close()
