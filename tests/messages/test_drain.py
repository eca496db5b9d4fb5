import json

import pytest
from django.db import connection
from django.test import Client

from messages import services, staging
from messages.models import Message
from stats.models import StateCount, Totals, UserCount

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_drain_stores_every_staged_message_once_with_rollups():
    client = Client()
    for i in range(30):
        response = client.post(
            "/message/write/",
            data=json.dumps({"username": f"u{i % 3}", "city": "Paris", "state": "IDF", "message": f"m{i}"}),
            content_type="application/json",
        )
        assert response.status_code == 202
    report = services.messages_drain(slot=0)
    assert report.stored == 30
    assert Message.objects.count() == 30
    assert staging.backlog() == 0
    totals = Totals.objects.get()
    assert (totals.messages, totals.users, totals.cities, totals.states) == (30, 3, 1, 1)
    assert StateCount.objects.get(state="IDF").messages == 30
    assert UserCount.objects.get(username="u0").messages == 10
