"""The copyable client (client/messy_client.py) against the real service: web and a worker
started by the run scripts. Its retry and split logic on cue is in tests/client/."""

import uuid

import pytest

from client.messy_client import MessyClient

pytestmark = pytest.mark.system


def stored_ids(stack) -> list[str]:
    connection = stack.db()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id::text FROM message")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def test_the_client_writes_thousands_of_messages_that_are_each_stored_exactly_once(stack):
    stack.start_web()
    stack.start_worker()
    # Batches of 1,500 are over the server's 1,000-item limit: each is refused with 413 and
    # sent again as two halves.
    client = MessyClient(f"http://127.0.0.1:{stack.web_port}", max_items=1500)
    messages = [
        {"username": f"user{i % 37}", "city": f"city{i % 11}", "state": f"S{i % 5}", "message": f"message {i}"}
        for i in range(4000)
    ]
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
    assert client.wait_stored([message_id], timeout=60) == []
