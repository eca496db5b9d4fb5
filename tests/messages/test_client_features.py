"""What ingestion clients expect: their own message ids (deduplicated per API key), a sent_at
timestamp, gzipped bodies, and paths without the trailing slash."""

import gzip
import io
import json
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from messages import payloads, services, staging
from messages.ids import message_id_ms
from messages.models import Message
from project.http import ApiError
from project.storage import bucket_ensure
from stats.models import MinuteCount
from stats.selectors import rollups_differences
from tasks.importing import import_job_create
from tasks.services import job_run

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}
CLIENT_ID = "0192d6c0-1a2b-7c3d-8e4f-0123456789ab"  # a UUIDv7


def post_json(client: Client, path: str, body, **headers):
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=raw, content_type="application/json", headers=headers)


def stored(message_id: str) -> Message:
    return Message.objects.get(pk=message_id)


@pytest.fixture
def keys(settings):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["key-a", "key-b"]


# --- the client's own message id -------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_client_id_from_the_same_key_is_answered_the_same_id_and_stored_once(keys):
    client = Client(HTTP_X_API_KEY="key-a")
    first = post_json(client, "/message/write/", {**GOOD, "id": CLIENT_ID}).json()["id"]
    again = post_json(client, "/message/write/", {**GOOD, "id": CLIENT_ID}).json()["id"]
    in_batch = post_json(client, "/message/batch/", [{**GOOD, "id": CLIENT_ID}]).json()["results"][0]["id"]
    assert first == again == in_batch

    services.messages_drain(staging.shards()[0], slot=0)

    assert Message.objects.count() == 1
    assert stored(first).message == "hello"
    assert rollups_differences() == []


@pytest.mark.django_db
def test_another_key_with_the_same_client_id_gets_its_own_message_not_the_first(keys):
    first = post_json(Client(HTTP_X_API_KEY="key-a"), "/message/write/", {**GOOD, "id": CLIENT_ID}).json()["id"]
    other = post_json(
        Client(HTTP_X_API_KEY="key-b"), "/message/write/", {**GOOD, "id": CLIENT_ID, "message": "claimed?"}
    ).json()["id"]
    assert other != first
    assert CLIENT_ID not in (first, other)  # the client's id is never the stored id

    services.messages_drain(staging.shards()[0], slot=0)

    assert stored(first).message == "hello"
    assert stored(other).message == "claimed?"


def test_a_uuidv7_client_id_keeps_its_millisecond_and_other_uuids_are_accepted(write_client):
    answered = post_json(write_client(), "/message/write/", {**GOOD, "id": CLIENT_ID}).json()["id"]
    assert message_id_ms(uuid.UUID(answered)) == message_id_ms(uuid.UUID(CLIENT_ID))
    v4 = str(uuid.uuid4())
    first = post_json(write_client(), "/message/write/", {**GOOD, "id": v4}).json()["id"]
    assert post_json(write_client(), "/message/write/", {**GOOD, "id": v4}).json()["id"] == first
    assert uuid.UUID(first).version == 8


@pytest.mark.parametrize("bad", ["not-a-uuid", 42, "x" * 100])
def test_a_client_id_that_is_not_a_uuid_is_a_field_error(bad, write_client):
    response = post_json(write_client(), "/message/write/", {**GOOD, "id": bad})
    assert response.status_code == 400
    assert response.json()["fields"] == {"id": ["Must be a UUID."]}


# --- sent_at ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent_at",
    ["2026-01-01T10:00:00Z", "2026-01-01T11:00:00+01:00", 1767261600000, "1767261600000"],
)
def test_sent_at_is_stored_from_iso_8601_with_a_zone_or_unix_ms(settings, sent_at, write_client):
    settings.MESSY_SENT_AT_MAX_AGE_SECONDS = 10**10
    message_id = post_json(write_client(), "/message/write/", {**GOOD, "sent_at": sent_at}).json()["id"]
    services.messages_drain(staging.shards()[0], slot=0)
    assert stored(message_id).sent_at == datetime(2026, 1, 1, 10, tzinfo=UTC)
    body = write_client().get(f"/message/{message_id}/").json()
    assert body["sent_at"] == "2026-01-01T10:00:00.000Z"
    # A live write keeps counting at the server's time: the timeline is the rate of acceptance.
    assert stored(message_id).accepted_at > datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.django_db
def test_without_sent_at_the_status_says_null(write_client):
    message_id = post_json(write_client(), "/message/write/", GOOD).json()["id"]
    services.messages_drain(staging.shards()[0], slot=0)
    assert write_client().get(f"/message/{message_id}/").json()["sent_at"] is None


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.mark.parametrize(
    ("sent_at", "reason"),
    [
        ("2026-01-01T10:00:00", "time zone"),
        ("yesterday", "ISO 8601"),
        (True, "ISO 8601"),
        (1.5, "ISO 8601"),
        # Relative to when the test runs, not to when the tests were collected.
        (timedelta(minutes=10), "future"),
        (-timedelta(days=8), "old"),
        (-1, "old"),
    ],
)
def test_a_sent_at_out_of_bounds_or_unreadable_is_a_field_error(sent_at, reason, write_client):
    if isinstance(sent_at, timedelta):
        sent_at = _iso(datetime.now(UTC) + sent_at)
    response = post_json(write_client(), "/message/write/", {**GOOD, "sent_at": sent_at})
    assert response.status_code == 400
    assert reason in response.json()["fields"]["sent_at"][0]
    assert staging.backlog() == 0


def test_a_little_clock_skew_is_accepted(write_client):
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    assert post_json(write_client(), "/message/write/", {**GOOD, "sent_at": _iso(ahead)}).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_an_import_keeps_each_records_own_time_in_the_rollups(s3_server):
    bucket_ensure()
    old = datetime(2020, 5, 17, 8, 30, 15, tzinfo=UTC)
    lines = [
        {**GOOD, "sent_at": "2020-05-17T08:30:15Z", "id": "legacy-42"},  # an import's "id" is its own business
        {**GOOD, "sent_at": int(old.timestamp() * 1000) + 1000},
        GOOD,
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    job = import_job_create(io.BytesIO(data), name="history.ndjson", enqueue=False)
    assert job_run(job.pk) == "succeeded"

    times = sorted(Message.objects.values_list("accepted_at", flat=True))
    assert times[:2] == [old, old + timedelta(seconds=1)]
    assert times[2] > datetime(2026, 1, 1, tzinfo=UTC)  # no sent_at: the job's time
    assert MinuteCount.objects.get(minute=datetime(2020, 5, 17, 8, 30, tzinfo=UTC)).messages == 2
    assert rollups_differences() == []


# --- gzip ------------------------------------------------------------------------------------


def post_gzip(
    client: type[Client], path: str, raw: bytes, content_type: str = "application/json", encoding: str = "gzip"
):
    return client().post(path, data=raw, content_type=content_type, headers={"Content-Encoding": encoding})


def test_gzipped_writes_and_batches_are_accepted(write_client):
    assert post_gzip(write_client, "/message/write/", gzip.compress(json.dumps(GOOD).encode())).status_code == 202
    ndjson = b"".join(json.dumps({**GOOD, "message": f"m{i}"}).encode() + b"\n" for i in range(3))
    response = post_gzip(write_client, "/message/batch/", gzip.compress(ndjson), "application/x-ndjson")
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    assert [p["message"] for p in map(json.loads, (f[b"m"] for _, f in _entries()))][-3:] == ["m0", "m1", "m2"]


def _entries():
    return staging.redis_client().xrange(staging.shards()[0].stream)


def test_a_gzip_bomb_is_inflated_only_as_far_as_the_limit():
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB inflated, from about 50 kB
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            payloads.gunzip(bomb, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 1_000_000, f"{peak:,} bytes allocated"


def test_the_size_limit_applies_to_the_inflated_body(settings, write_client):
    settings.MESSY_WRITE_MAX_BYTES = 1000
    bomb = gzip.compress(json.dumps({**GOOD, "pad": " " * 5000}).encode())
    assert len(bomb) < 1000
    response = post_gzip(write_client, "/message/write/", bomb)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")
    big_batch = gzip.compress(json.dumps([GOOD] * 10).encode())
    settings.MESSY_BATCH_MAX_BYTES = 500
    assert post_gzip(write_client, "/message/batch/", big_batch).status_code == 413


@pytest.mark.parametrize(
    "raw",
    [b"not gzip at all", gzip.compress(json.dumps(GOOD).encode())[:-12]],
    ids=["corrupt", "truncated"],
)
def test_a_body_that_is_not_valid_gzip_is_400(raw, write_client):
    response = post_gzip(write_client, "/message/write/", raw)
    assert (response.status_code, response.json()["error"]) == (400, "malformed_gzip")


def test_a_body_that_inflates_past_the_ratio_is_refused_before_it_is_parsed(settings):
    settings.MESSY_GZIP_MAX_RATIO = 10
    assert payloads.gunzip(gzip.compress(b"0123456789" * 5), 10_000) == b"0123456789" * 5
    with pytest.raises(ApiError) as refused:
        payloads.gunzip(gzip.compress(b" " * 5000), 10_000)
    assert (refused.value.status, refused.value.error) == (413, "compression_ratio_too_high")


@pytest.mark.parametrize(
    "tail",
    [gzip.compress(b'{"username": "eve"}'), b"garbage", b"\0"],
    ids=["second-member", "garbage", "nul"],
)
def test_anything_after_the_gzip_member_is_400(tail, write_client):
    response = post_gzip(write_client, "/message/write/", gzip.compress(json.dumps(GOOD).encode()) + tail)
    assert (response.status_code, response.json()["error"]) == (400, "malformed_gzip")


def _batch_cost(body: bytes, content_type: str, encoding: str = "identity") -> tuple[ApiError, float, int]:
    """What refusing `body` at /message/batch/ costs: the error, CPU seconds, peak bytes allocated."""
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "HTTP_CONTENT_ENCODING": encoding}
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ApiError) as refused:
            payloads.batch_items(meta, lambda: body)
        return refused.value, time.process_time() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        (b"[" + b"{}," * 1_400_000 + b"{}]", "application/json"),
        (b"{}\n" * 1_400_000, "application/x-ndjson"),
        (b"[" + b"1," * 2_000_000 + b"1]", "application/json"),
    ],
    ids=["json-objects", "ndjson-objects", "json-numbers"],
)
def test_a_hostile_4_kb_gzip_batch_costs_little(document, content_type):
    """4 MiB of tiny items gzip to about 4 KB: refused for its ratio, before parsing anything.
    Before: the whole document was parsed (0.2-0.3 s of CPU, 40-80 MB)."""
    bomb = gzip.compress(document, 9)
    assert len(bomb) < 16_000
    refused, cpu, peak = _batch_cost(bomb, content_type, "gzip")
    assert (refused.status, refused.error) == (413, "compression_ratio_too_high")
    assert cpu < 0.05, f"{cpu:.3f} s of CPU"
    assert peak < 2_000_000, f"{peak:,} bytes allocated"


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        (b"[" + b"{}," * 300_000 + b"{}]", "application/json"),
        (b"[" + b'"",' * 300_000 + b'""]', "application/json"),
        (b"{}\n" * 300_000, "application/x-ndjson"),
        (b"\n" * 1_000_000 + b"{}\n" * 300_000, "application/x-ndjson"),
    ],
    ids=["json-objects", "json-strings", "ndjson", "ndjson-blank-lines"],
)
def test_items_past_the_limit_are_counted_not_built(document, content_type):
    """What a body within the ratio can inflate to: counting stops at the item limit."""
    refused, cpu, peak = _batch_cost(document, content_type)
    assert (refused.status, refused.error) == (413, "too_many_items")
    assert cpu < 0.05, f"{cpu:.3f} s of CPU"
    # The body itself (and, for a JSON array, its text) and the limit's items, nothing per item past it.
    assert peak < 2 * len(document) + 1_000_000, f"{peak:,} bytes allocated"


@pytest.mark.parametrize("separators", [10, 30_000])
def test_a_json_batch_reads_the_same_by_either_parser(separators):
    items = [{**GOOD, "message": "," * separators, "n": [1.5, None, True, "\u00e9"]}, {}, [], "x"]
    body = json.dumps(items).encode()
    meta = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body))}
    assert [item.data for item in payloads.batch_items(meta, lambda: body)] == items


@pytest.mark.parametrize(
    "body",
    [
        b"[1,,2]",
        b"[1,2",
        b"[1 2]",
        b"[1]x",
        b'{"a": 1}',
        b"[" + b"[]" * 20_000 + b"]",
        b"[" + b"[" + b"1," * 24 + b"1]," * 900,
    ],
    ids=["empty-item", "unclosed", "no-comma", "trailing", "object", "scanned-no-comma", "scanned-unclosed"],
)
def test_a_malformed_json_batch_is_400_by_either_parser(body):
    meta = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body))}
    with pytest.raises(ApiError) as refused:
        payloads.batch_items(meta, lambda: body)
    assert (refused.value.status, refused.value.error) == (400, "malformed_json")


def test_an_unknown_content_encoding_is_415(write_client):
    response = post_gzip(write_client, "/message/batch/", b"...", encoding="br")
    assert (response.status_code, response.json()["error"]) == (415, "unsupported_content_encoding")
    assert post_gzip(write_client, "/message/write/", json.dumps(GOOD).encode(), encoding="identity").status_code == 202


# --- paths without the trailing slash --------------------------------------------------------


def test_writes_without_the_trailing_slash_are_accepted_not_redirected(write_client):
    assert post_json(write_client(), "/message/write", GOOD).status_code == 202
    response = post_json(write_client(), "/message/batch", [GOOD])
    assert response.status_code == 202
    assert staging.backlog() == 2


def test_another_post_without_its_slash_is_a_json_404_naming_the_path(write_client):
    response = write_client().post("/tasks/import", data=b"x", content_type="application/x-ndjson")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "/tasks/import/" in response.json()["message"]


def test_a_get_without_its_slash_is_still_redirected(write_client):
    response = write_client().get("/stat")
    assert response.status_code == 301
    assert response["Location"] == "/stat/"
