"""Liveness and metrics, against the real services (readiness and /status: tests/test_health.py)."""

import json

import pytest
from django.test import Client

from messages import services, staging

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def test_healthz_answers_without_touching_any_service():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db(transaction=True)
def test_metrics_count_accepted_rejected_stored_and_the_backlog():
    client = Client()
    for _ in range(3):
        client.post("/message/write/", data=json.dumps(GOOD), content_type="application/json")
    client.post("/message/write/", data=json.dumps({"username": "x"}), content_type="application/json")
    text = client.get("/metrics").content.decode()
    assert "messy_messages_accepted_total 3.0" in text
    assert 'messy_messages_rejected_total{reason="invalid"} 1.0' in text
    assert "messy_backlog_messages 3.0" in text
    services.messages_drain(staging.shards()[0], slot=0)
    text = client.get("/metrics").content.decode()
    assert "messy_backlog_messages 0.0" in text
    assert "messy_messages_stored_total 3.0" in text
    assert 'messy_drain_batch_size_bucket{le="10"} 1.0' in text
