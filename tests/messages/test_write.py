"""The write endpoints: what is accepted, what is refused and how, and what is staged."""

import json

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from messages import staging
from project.redis import redis_client, redis_client_reset
from tests.harness import redis_admin

GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def client(write_client: type[Client]) -> Client:
    return write_client()


def post_json(client: Client, path: str, body, **headers):
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=raw, content_type="application/json", headers=headers)


def staged_payloads() -> list[dict]:
    entries = staging.redis_client().xrange(staging.shards()[0].stream)
    return [json.loads(fields[b"m"]) for _, fields in entries]


def test_it_accepts_a_json_message_with_202_and_an_id(client):
    response = post_json(client, "/message/write/", GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    [payload] = staged_payloads()
    assert payload["id"] == body["id"]
    assert {k: payload[k] for k in GOOD} == GOOD


def test_it_accepts_form_fields(client):
    response = client.post("/message/write/", data=GOOD)  # multipart, as a browser form would
    assert response.status_code == 202
    response = client.post(
        "/message/write/",
        data="username=bob&city=Austin&state=TX&message=caf%C3%A9",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202
    assert staged_payloads()[-1]["message"] == "café"


def test_it_accepts_query_parameters_on_get_as_the_original_service_did(client):
    response = client.get("/message/write/", GOOD)
    assert response.status_code == 202
    assert staged_payloads()[0]["username"] == "ada"


def test_it_names_every_missing_field(client):
    response = post_json(client, "/message/write/", {"username": "ada"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_message"
    assert set(body["fields"]) == {"city", "state", "message"}
    assert staging.backlog() == 0


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("username", "x" * 65, "at most 64"),
        ("message", "x" * 4097, "at most 4096"),
        ("message", "nul \x00 inside", "NUL"),
        ("city", "   ", "blank"),
        ("state", "T\nX", "control characters"),
        ("username", 42, "string"),
    ],
)
def test_it_rejects_a_bad_field_with_its_reason(client, field, value, reason):
    response = post_json(client, "/message/write/", {**GOOD, field: value})
    assert response.status_code == 400
    [message] = response.json()["fields"][field]
    assert reason in message
    assert staging.backlog() == 0


def test_it_rejects_a_nul_byte_sent_as_a_form_field(client):
    response = client.post(
        "/message/write/",
        data="username=a&city=b&state=c&message=x%00y",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert "message" in response.json()["fields"]


def test_it_rejects_a_lone_surrogate_from_a_json_escape(client):
    response = post_json(
        client, "/message/write/", '{"username": "a", "city": "b", "state": "c", "message": "\\ud800"}'
    )
    assert response.status_code == 400
    assert "Unicode" in response.json()["fields"]["message"][0]


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/json", b'{"username": "a\xff", "city": "b", "state": "c", "message": "d"}'),
        ("application/x-www-form-urlencoded", b"username=a%FF&city=b&state=c&message=d"),
        ("application/x-www-form-urlencoded", b"username=a\xff&city=b&state=c&message=d"),
    ],
)
def test_it_rejects_invalid_utf8_with_400(client, content_type, raw):
    response = client.post("/message/write/", data=raw, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_encoding"


@pytest.mark.parametrize(
    "raw",
    ['{"username": ', "[1, 2]", '"just a string"', "[" * 20_000, "null"],
    ids=["truncated", "array", "string", "deeply-nested", "null"],
)
def test_it_rejects_malformed_or_non_object_json_with_400(client, raw):
    response = post_json(client, "/message/write/", raw)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


def test_it_answers_415_to_a_content_type_it_does_not_read(client):
    response = client.post("/message/write/", data="hello", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_it_answers_413_to_an_oversized_body(client, settings):
    settings.MESSY_WRITE_MAX_BYTES = 1000
    response = post_json(client, "/message/write/", {**GOOD, "message": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_it_answers_405_in_json_to_other_methods(client):
    response = client.put("/message/write/", data=json.dumps(GOOD), content_type="application/json")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response["Allow"]


@pytest.mark.django_db
def test_the_write_requests_make_no_database_query(client):
    with CaptureQueriesContext(connection) as queries:
        assert post_json(client, "/message/write/", GOOD).status_code == 202
        assert client.get("/message/write/", GOOD).status_code == 202
        assert post_json(client, "/message/batch/", [GOOD, GOOD]).status_code == 202
    assert queries.captured_queries == []


def test_a_redis_that_lost_its_script_cache_is_given_the_script_again(client):
    redis_client().script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    assert staging.backlog() == 1


def test_after_its_redis_connection_is_closed_a_write_gets_503_and_the_next_reconnects(client):
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    web_connection_id = redis_client().client_id()
    redis_admin(settings.REDIS_URL).client_kill_filter(_id=web_connection_id)  # as a restart would
    refused = post_json(client, "/message/write/", GOOD)
    assert refused.status_code == 503 and refused["Retry-After"]
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    assert redis_client().client_id() != web_connection_id
    assert staging.backlog() == 2


def test_a_bad_message_does_not_block_the_next_one(client):
    assert post_json(client, "/message/write/", {**GOOD, "message": "\x00"}).status_code == 400
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    assert staging.backlog() == 1


# --- Idempotency ------------------------------------------------------------------------------


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_stages_nothing(client):
    first = post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "k-1"})
    again = post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["replayed"] is True
    assert staging.backlog() == 1


def test_the_same_idempotency_key_with_a_different_body_is_422(client):
    post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "k-2"})
    response = post_json(client, "/message/write/", {**GOOD, "message": "other"}, **{"Idempotency-Key": "k-2"})
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert staging.backlog() == 1


def test_idempotency_keys_of_different_api_keys_do_not_collide(client):
    post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "same", "X-API-Key": "one"})
    response = post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "same", "X-API-Key": "two"})
    assert "replayed" not in response.json()
    assert staging.backlog() == 2


def test_a_batch_retry_with_the_same_key_stages_nothing_new(client):
    batch = [GOOD, {**GOOD, "username": "bob"}]
    first = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "b-1"})
    again = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "b-1"})
    assert again.json()["results"] == first.json()["results"]
    assert staging.backlog() == 2


def test_an_unprintable_idempotency_key_is_refused(client):
    response = post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "x" * 300})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_idempotency_key"


# --- Batch ------------------------------------------------------------------------------------


def test_a_json_batch_reports_each_item_in_order(client):
    batch = [GOOD, {"username": "x"}, {**GOOD, "city": "Leeds"}, "not an object"]
    response = post_json(client, "/message/batch/", batch)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [(0, "accepted"), (1, "rejected"), (2, "accepted"), (3, "rejected")]
    assert set(body["results"][1]["fields"]) == {"city", "state", "message"}
    staged_ids = [p["id"] for p in staged_payloads()]
    assert staged_ids == [body["results"][0]["id"], body["results"][2]["id"]]


def test_an_ndjson_batch_rejects_only_its_malformed_lines(client):
    lines = [json.dumps(GOOD), "{broken", "", json.dumps({**GOOD, "username": "zed"}), '{"username": "a\xff"}']
    raw = "\n".join(lines).encode("utf-8", "surrogateescape").replace("\xc3\xbf".encode("latin-1"), b"\xff")
    response = client.post("/message/batch/", data=raw, content_type="application/x-ndjson")
    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted", "rejected"]
    assert "JSON" in results[1]["fields"]["__all__"][0]
    assert staging.backlog() == 2


def test_a_batch_over_the_item_limit_is_413(client, settings):
    settings.MESSY_BATCH_MAX_ITEMS = 10
    response = post_json(client, "/message/batch/", [GOOD] * 11)
    assert response.status_code == 413
    assert staging.backlog() == 0


def test_a_batch_over_the_byte_limit_is_413(client, settings):
    settings.MESSY_BATCH_MAX_BYTES = 100
    response = post_json(client, "/message/batch/", [GOOD] * 5)
    assert response.status_code == 413


def test_a_batch_with_no_valid_message_is_400_with_the_reasons(client):
    response = post_json(client, "/message/batch/", [{"username": "x"}])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "no_valid_messages"
    assert body["results"][0]["status"] == "rejected"


@pytest.mark.parametrize("raw", ["[]", "{}", "[", ""])
def test_an_empty_or_malformed_batch_is_400(client, raw):
    response = post_json(client, "/message/batch/", raw)
    assert response.status_code == 400


# --- Backpressure, availability, authentication ----------------------------------------------


def test_past_the_backlog_bound_writes_get_503_with_retry_after(client, settings):
    settings.MESSY_BACKLOG_MAX = 2
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    response = post_json(client, "/message/write/", GOOD)
    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.MESSY_RETRY_AFTER_SECONDS)
    assert response.json()["error"] == "backlog_full"
    assert post_json(client, "/message/batch/", [GOOD]).status_code == 503
    assert staging.backlog() == 2


def test_when_redis_is_unreachable_writes_get_503_not_500(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_TIMEOUT = 0.2
    redis_client_reset()
    try:
        response = post_json(client, "/message/write/", GOOD)
    finally:
        redis_client_reset()
    assert response.status_code == 503
    assert response.json()["error"] == "staging_unavailable"
    assert "Retry-After" in response


def test_with_api_keys_required_writes_need_a_valid_key(client, settings):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["s3cret"]
    assert post_json(client, "/message/write/", GOOD).status_code == 401
    assert post_json(client, "/message/write/", GOOD, **{"X-API-Key": "wrong"}).status_code == 403
    assert post_json(client, "/message/batch/", [GOOD], Authorization="Bearer wrong").status_code == 403
    assert post_json(client, "/message/write/", GOOD, **{"X-API-Key": "s3cret"}).status_code == 202
    assert post_json(client, "/message/batch/", [GOOD], Authorization="Bearer s3cret").status_code == 202


def test_an_idempotency_record_keeps_only_a_digest_and_the_accepted_ids(client, settings):
    settings.MESSY_IDEMPOTENCY_TTL = 600
    batch = [GOOD] + [{}] * 999  # 3 KB that once cost a 206 KB record
    response = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "small"})
    assert response.status_code == 202
    record_key = staging.idempotency_key(staging.shards()[0], "127.0.0.1", "small")  # its address: its scope
    redis = staging.redis_client()
    assert redis.strlen(record_key) <= 33 + 16
    assert 590 < redis.ttl(record_key) <= 600
    again = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "small"})
    assert again.json() == {**response.json(), "replayed": True}
    assert staging.backlog() == 1


def test_a_replayed_single_write_is_rebuilt_from_its_record(client):
    first = post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "one"})
    # The same message, keys in another order and an extra field: the same request.
    again = post_json(
        client, "/message/write/", {"extra": 1, **dict(reversed(GOOD.items()))}, **{"Idempotency-Key": "one"}
    )
    assert again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "status": "accepted", "replayed": True}


def test_a_batch_replay_recomputes_the_verdicts_and_fills_the_ids_in_order(client):
    batch = [GOOD, {"username": "x"}, {**GOOD, "username": "bob"}, GOOD]
    first = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "b-order"})
    again = post_json(client, "/message/batch/", batch, **{"Idempotency-Key": "b-order"})
    assert again.json()["results"] == first.json()["results"]
    assert [r.get("id") for r in again.json()["results"]] == [r.get("id") for r in first.json()["results"]]
    assert staging.backlog() == 3


def test_an_idempotency_key_used_for_a_single_write_does_not_replay_a_batch(client):
    post_json(client, "/message/write/", GOOD, **{"Idempotency-Key": "kind"})
    response = post_json(client, "/message/batch/", [GOOD], **{"Idempotency-Key": "kind"})
    assert response.status_code == 422


def test_a_batch_with_an_accepted_message_moved_is_a_different_request(client):
    post_json(client, "/message/batch/", [GOOD, {}], **{"Idempotency-Key": "moved"})
    response = post_json(client, "/message/batch/", [{}, GOOD], **{"Idempotency-Key": "moved"})
    assert response.status_code == 422


def test_an_extra_field_nested_as_deep_as_json_parses_with_an_idempotency_key_is_accepted(client):
    """Issue 9: the fingerprint once re-serialised the raw request, two levels deeper than the
    parser had gone: the deepest body that parsed (about 958 levels) then answered 500."""

    def body(depth: int) -> str:
        return json.dumps(GOOD)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"

    def post(raw: str, key: str):
        return post_json(client, "/message/write/", raw, **{"Idempotency-Key": key})

    deepest = next(d for d in range(1000, 0, -1) if post(body(d), f"probe-{d}").status_code != 400)
    first = post(body(deepest), "deep")
    assert first.status_code == 202
    again = post(body(deepest), "deep")
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])


def test_a_json_array_over_the_item_limit_is_refused_before_any_item_is_built(client, monkeypatch):
    """Issue 9: a 4 MiB array of {} once cost 1.4 s and 174 MB before its 413."""
    from messages import payloads, views

    def built(*args, **kwargs):
        raise AssertionError("an item was built before the count was checked")

    monkeypatch.setattr(payloads, "BatchItem", built)
    monkeypatch.setattr(views, "message_validate", built)
    raw = "[" + ",".join(["{}"] * (4 * 1024 * 1024 // 3 - 1)) + "]"
    response = post_json(client, "/message/batch/", raw)
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_items"


def test_past_the_backlog_byte_bound_writes_get_503_with_retry_after(client, settings):
    assert post_json(client, "/message/write/", GOOD).status_code == 202
    settings.MESSY_BACKLOG_MAX_BYTES = staging.redis_client().memory_usage(staging.shards()[0].stream) + 50
    response = post_json(client, "/message/write/", GOOD)
    assert response.status_code == 503
    assert response.json()["error"] == "backlog_full"
    assert response["Retry-After"] == str(settings.MESSY_RETRY_AFTER_SECONDS)
    assert staging.backlog() == 1
