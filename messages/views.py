"""Write endpoints and the status read. Thin: parse once, call a service, answer.

The write endpoints are served twice over: by the Django views below, and by the lean handlers
(messages.lean) that project.wsgi dispatches to before Django's. Both call message_write_answer
and message_batch_answer, which read only the WSGI environ and the body: one contract.

# Documented in docs/fast-path.md ("The write, parsed once").
"""

import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from messages import clients, payloads, selectors, services
from messages.validation import MessageInput, message_validate
from project.conf import cached_settings
from project.http import Answer, ApiError, api_view, json_response, method_check, methods
from project.ratelimit import write_key_failure_note, write_key_failures_wait

ACCEPTED = 202
WRITE_METHODS = ("GET", "POST")
BATCH_METHODS = ("POST",)


def write_key_check(meta: Mapping[str, Any]) -> str:
    """When MESSY_REQUIRE_WRITE_API_KEY is on, writes need a key from MESSY_WRITE_API_KEYS
    (checked against settings, in constant time, not the database: no query on the write path).
    Returns the key the client sent ("" if none)."""
    key = clients.api_key_from(meta)
    if cached_settings.MESSY_REQUIRE_WRITE_API_KEY:
        if not key:
            raise ApiError(401, "api_key_required", "Send an API key in X-API-Key or Authorization: Bearer.")
        # Wrong keys count toward the failure limit of the client's address (project.ratelimit).
        wait = write_key_failures_wait(meta)
        if wait:
            raise ApiError(
                429,
                "too_many_failures",
                "Too many invalid API keys from your address; retry later.",
                headers={"Retry-After": str(wait)},
            )
        if not clients.api_key_valid(key):
            write_key_failure_note(meta)
            raise ApiError(403, "api_key_invalid", "That API key is not valid.")
    return key


def write_key_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """write_key_check as a decorator, for the status read."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        write_key_check(request.META)
        return view(request, *args, **kwargs)

    return wrapper


def _accept(
    meta: Mapping[str, Any],
    api_key: str,
    inputs: list[MessageInput],
    endpoint: str,
    verdicts: list[MessageInput | None],
) -> tuple[services.Accepted, clients.Quota | None]:
    """Parse the rest of the write (who, its quota, its Idempotency-Key) into one request and
    accept it, turning each refusal into its documented answer: 202, 4xx, or 429/503 with
    Retry-After, never 500."""
    client_key = payloads.idempotency_key_from(meta)
    subject, quota = clients.quota_subject(meta, api_key)
    request = services.WriteRequest(
        inputs,
        client=clients.client_scope(subject, api_key),
        idempotency_key=client_key,
        fingerprint=payloads.fingerprint(endpoint, verdicts) if client_key else b"",
        quota_subject=subject,
        quota=quota,
    )
    try:
        return services.messages_accept(request), quota
    except services.QuotaExceeded as exc:
        raise ApiError(
            429,
            "quota_exceeded",
            f"Over this client's quota of {exc.quota.rate:g} messages a second (bursts of {exc.quota.burst});"
            " retry later, or send smaller batches.",
            headers={"Retry-After": str(exc.retry_after), **_rate_limit(exc.quota, exc.remaining, exc.retry_after)},
        ) from None
    except services.IdempotencyConflict:
        raise ApiError(
            422, "idempotency_key_reused", "This Idempotency-Key was used for a different request."
        ) from None
    except services.MessageIdConflict as exc:
        raise ApiError(
            409,
            "message_id_conflict",
            "A message was accepted before under this id with other content; nothing was accepted.",
            fields={_item_name(endpoint, verdicts, position): [ID_CONFLICT] for position in exc.positions},
        ) from None
    except services.BacklogShareFull:
        raise ApiError(
            429,
            "backlog_share_exceeded",
            "This client's messages already fill its share of the backlog; retry once they are stored.",
            headers=_retry_after(),
        ) from None
    except services.IdempotencyBudgetSpent as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        if exc.full:
            raise ApiError(
                503,
                "idempotency_full",
                "No more Idempotency-Keys (or own message ids) can be remembered now; retry later, "
                "or send without them.",
                headers=headers,
            ) from None
        raise ApiError(
            429,
            "idempotency_quota_exceeded",
            "No more Idempotency-Keys (or own message ids) can be remembered for this client; "
            "retry later, or send without them.",
            headers=headers,
        ) from None
    except services.BacklogFull:
        raise ApiError(
            503, "backlog_full", "Too many messages are waiting; retry later.", headers=_retry_after()
        ) from None
    except services.StagingFull:
        raise ApiError(503, "staging_full", "The staging store is full; retry later.", headers=_retry_after()) from None
    except services.StagingUnavailable:
        raise ApiError(
            503, "staging_unavailable", "Messages cannot be staged now; retry later.", headers=_retry_after()
        ) from None


def _accepted(accepted: services.Accepted, quota: clients.Quota | None, body: dict[str, Any]) -> Answer:
    if accepted.replayed:
        body["replayed"] = True
    if accepted.quota_remaining is None or quota is None:
        return Answer(ACCEPTED, body)
    return Answer(ACCEPTED, body, _rate_limit(quota, accepted.quota_remaining, accepted.quota_reset or 0))


ID_CONFLICT = "A message with this id was accepted before with other content."


def _item_name(endpoint: str, verdicts: list[MessageInput | None], position: int) -> str:
    """The field an accepted message's error is reported under: "id" for a single write, "<index>"
    (its place in the batch, rejected items counted) for a batch."""
    if endpoint == "write":
        return "id"
    accepted = [index for index, verdict in enumerate(verdicts) if verdict is not None]
    return str(accepted[position])


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(settings.MESSY_RETRY_AFTER_SECONDS)}


def _rate_limit(quota: clients.Quota, remaining: int, reset: int) -> dict[str, str]:
    """The IETF draft's RateLimit headers: the bucket's size, the tokens left, and the seconds
    until it is full again (on a 429: until it holds enough for the request)."""
    return {"RateLimit-Limit": str(quota.burst), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(reset)}


def message_write_answer(
    method: str | None,
    meta: Mapping[str, Any],
    read_body: payloads.BodyReader,
    multipart: Callable[[], dict[str, Any]] | None = None,
) -> Answer:
    """POST or GET /message/write/: one message. Raises ApiError for every refusal."""
    method_check(method, WRITE_METHODS)
    api_key = write_key_check(meta)
    data = payloads.write_data(method, meta, read_body, multipart)
    clean, errors = message_validate(data)
    if clean is None:
        services.messages_rejected_count(1)
        raise ApiError(400, "invalid_message", "Some fields are not valid.", fields=errors)
    accepted, quota = _accept(meta, api_key, [clean], "write", [clean])
    return _accepted(accepted, quota, {"id": accepted.ids[0], "status": "accepted"})


def message_batch_answer(method: str | None, meta: Mapping[str, Any], read_body: payloads.BodyReader) -> Answer:
    """POST /message/batch/: many messages, each accepted or rejected on its own."""
    method_check(method, BATCH_METHODS)
    api_key = write_key_check(meta)
    items = payloads.batch_items(meta, read_body)
    checked = [
        (None, {"__all__": [item.parse_error]}) if item.parse_error else message_validate(item.data) for item in items
    ]
    verdicts = [clean for clean, _ in checked]
    valid = [clean for clean in verdicts if clean is not None]
    if len(valid) < len(checked):
        services.messages_rejected_count(len(checked) - len(valid))
    if not valid:
        return Answer(400, {"error": "no_valid_messages", **_batch_body(checked, [])})
    accepted, quota = _accept(meta, api_key, valid, "batch", verdicts)
    return _accepted(accepted, quota, _batch_body(checked, accepted.ids))


def _batch_body(checked: list[tuple[MessageInput | None, Any]], ids: list[str]) -> dict[str, Any]:
    next_id = iter(ids).__next__
    results = [
        {"index": i, "status": "accepted", "id": next_id()}
        if clean is not None
        else {"index": i, "status": "rejected", "fields": errors}
        for i, (clean, errors) in enumerate(checked)
    ]
    return {"accepted": len(ids), "rejected": len(checked) - len(ids), "results": results}


@api_view
def message_write(request: HttpRequest) -> HttpResponse:
    return message_write_answer(
        request.method, request.META, lambda: request.body, lambda: request.POST.dict()
    ).response()


@api_view
def message_batch(request: HttpRequest) -> HttpResponse:
    return message_batch_answer(request.method, request.META, lambda: request.body).response()


@api_view
@methods("GET")
@write_key_required
def message_status(request: HttpRequest, message_id: uuid.UUID) -> HttpResponse:
    try:
        status = selectors.message_status(message_id)
    except (DatabaseError, services.StagingUnavailable) as exc:
        error = "database_unavailable" if isinstance(exc, DatabaseError) else "staging_unavailable"
        raise ApiError(
            503,
            error,
            "Message status cannot be read now; retry later.",
            headers={"Retry-After": str(settings.MESSY_RETRY_AFTER_SECONDS)},
        ) from None
    if status is None:
        raise ApiError(404, "message_not_found", "No message with that id is pending or stored.")
    return json_response(status)


def through_django(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The same view under another identity, so that no lean handler claims its route."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return view(request, *args, **kwargs)

    return wrapper


@api_view
@methods("GET", "POST")
def noop(request: HttpRequest) -> HttpResponse:
    """The benchmark's baseline: the same server and middleware, and no work at all."""
    return json_response({"status": "ok"}, status=ACCEPTED)
