"""A job's page link grants nothing beyond that job's page, JSON and report, and the ids of the
messages an import stored cannot be computed from anything the link shows (issue 9, item 5)."""

import hashlib
import json
import uuid
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from messages.ids import message_id_from, message_id_ms
from messages.models import Message
from tasks import services
from tasks.importing import record_message_id
from tests.tasks.conftest import ndjson, rows

pytestmark = pytest.mark.django_db(transaction=True)

WRITE_KEY = "right-key"
POSITIONS = range(20)  # wider than the file, whatever a record's first position is


@pytest.fixture
def keys_required(settings):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = [WRITE_KEY]


def import_run(api: Client) -> tuple[str, str]:
    """An import through the API (one bad line, so that it has a report), run to its end: the
    job's id and the signed link its creator was given."""
    response = api.post("/tasks/import/", data=ndjson([*rows(5), "{bad"]), content_type="application/x-ndjson")
    assert response.status_code == 202
    created = response.json()
    assert services.job_run(created["id"]) == "succeeded"
    link = parse_qs(urlsplit(created["urls"]["page"]).query)["t"][0]
    return created["id"], link


def stored_ids() -> set[str]:
    return {str(message_id) for message_id in Message.objects.values_list("id", flat=True)}


def test_a_page_link_grants_its_jobs_page_json_and_report_and_nothing_else(s3, api, keys_required):
    job_id, link = import_run(api)
    ids = stored_ids()
    other_id, _ = import_run(api)
    anyone, q = Client(), {"t": link}
    assert anyone.get(f"/tasks/{job_id}/", q).status_code == 200
    assert anyone.get(f"/tasks/jobs/{job_id}/", q).status_code == 200
    assert anyone.get(f"/tasks/jobs/{job_id}/report/", q).status_code == 302
    as_bearer, as_write_key = Client(HTTP_AUTHORIZATION=f"Bearer {link}"), Client(HTTP_X_API_KEY=link)
    refused = {
        "another job's JSON": anyone.get(f"/tasks/jobs/{other_id}/", q),
        "another job's page": anyone.get(f"/tasks/{other_id}/", q),
        "another job's report": anyone.get(f"/tasks/jobs/{other_id}/report/", q),
        "the list": anyone.get("/tasks/jobs/", q),
        "cancelling it": anyone.post(f"/tasks/jobs/{job_id}/cancel/?t={link}"),
        "cancelling another": anyone.post(f"/tasks/jobs/{other_id}/cancel/?t={link}"),
        "the erasure count": anyone.get("/tasks/erase/", q),
        "an erasure": anyone.post(
            f"/tasks/erase/?t={link}", data=json.dumps({"username": "ana"}), content_type="application/json"
        ),
        "an import": anyone.post(f"/tasks/import/?t={link}", data=ndjson(rows(1)), content_type="application/x-ndjson"),
        "the list, link as a token": as_bearer.get("/tasks/jobs/"),
        "its JSON, link as a token": as_bearer.get(f"/tasks/jobs/{job_id}/"),
        "a write, link as a key": as_write_key.post(
            "/message/write/", data=json.dumps(rows(1)[0]), content_type="application/json"
        ),
    }
    for message_id in ids:
        refused[f"status of {message_id}"] = anyone.get(f"/message/{message_id}/", q)
        refused[f"status of {message_id}, link as a token"] = as_bearer.get(f"/message/{message_id}/")
        refused[f"status of {message_id}, link as a key"] = as_write_key.get(f"/message/{message_id}/")
    for what, response in refused.items():
        assert response.status_code in (401, 403), what
        assert b"message 0" not in response.content, what
    # With the write key, the same reads answer: the refusals above are the link's, not the ids'.
    assert Client(HTTP_X_API_KEY=WRITE_KEY).get(f"/message/{min(ids)}/").json()["status"] == "stored"


def _ms(shown: str) -> int:
    moment = datetime.fromisoformat(shown.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def test_imported_ids_cannot_be_computed_from_the_job_id_its_creation_time_and_the_line(s3, api, keys_required):
    job_id, link = import_run(api)
    ids = stored_ids()
    assert len(ids) == 5
    shown = Client().get(f"/tasks/jobs/{job_id}/", {"t": link}).json()
    ms = _ms(shown["created_at"])
    # What the link shows is all the unkeyed derivation needed (before issue 9): a SHA-256 of
    # job id and position, under the job's millisecond. None of its guesses is a stored id ...
    guesses = {
        message_id_from(at, hashlib.sha256(uuid.UUID(job_id).bytes + position.to_bytes(8, "big")).digest())
        for at in (ms - 1, ms, ms + 1)
        for position in POSITIONS
    }
    assert not guesses & ids
    # ... and none reads anything, even with a valid write key.
    keyed = Client(HTTP_X_API_KEY=WRITE_KEY)
    assert {keyed.get(f"/message/{guess}/").status_code for guess in sorted(guesses)[:20]} == {404}
    # The ids stay time-ordered (the job's millisecond, which the link does show) and the same
    # for the same job and position, so a retried import still stores each record once.
    assert all(abs(message_id_ms(uuid.UUID(message_id)) - ms) <= 1 for message_id in ids)
    at = message_id_ms(uuid.UUID(min(ids)))
    assert ids <= {record_message_id(uuid.UUID(job_id), position, at) for position in POSITIONS}
