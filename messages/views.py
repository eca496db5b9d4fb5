"""Write endpoints and the status read. Thin: parse, call a service, answer."""

import functools
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from messages import payloads, selectors, services
from messages.validation import MessageInput, message_validate
from project.http import ApiError, api_view, bearer_token, json_response, methods

ACCEPTED = 202


def _api_key(request: HttpRequest) -> str:
    return bearer_token(request) or request.META.get("HTTP_X_API_KEY", "")


def write_key_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """When MESSY_REQUIRE_WRITE_API_KEY is on, writes need a key from MESSY_WRITE_API_KEYS
    (checked against settings, not the database: no query on the write path)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if settings.MESSY_REQUIRE_WRITE_API_KEY:
            key = _api_key(request)
            if not key:
                raise ApiError(401, "api_key_required", "Send an API key in X-API-Key or Authorization: Bearer.")
            if key not in settings.MESSY_WRITE_API_KEYS:
                raise ApiError(403, "api_key_invalid", "That API key is not valid.")
        return view(request, *args, **kwargs)

    return wrapper


def _stage(
    request: HttpRequest,
    inputs: list[MessageInput],
    answer: Callable[[services.Accepted], dict[str, Any]],
    endpoint: str,
    verdicts: list[MessageInput | None],
) -> HttpResponse:
    """Stage validated inputs and turn each failure into its documented answer: the write path
    answers 202, 4xx, or 503 with Retry-After, never 500."""
    client_key = payloads.idempotency_key_from(request)
    retry_after = {"Retry-After": str(settings.MESSY_RETRY_AFTER_SECONDS)}
    try:
        body = services.messages_stage(
            inputs,
            answer,
            idempotency_key=client_key,
            api_key=_api_key(request) if client_key else "",
            fingerprint=payloads.fingerprint(endpoint, verdicts) if client_key else b"",
        )
    except services.IdempotencyConflict:
        raise ApiError(
            422, "idempotency_key_reused", "This Idempotency-Key was used for a different request."
        ) from None
    except services.BacklogFull:
        raise ApiError(
            503, "backlog_full", "Too many messages are waiting; retry later.", headers=retry_after
        ) from None
    except (services.StagingFull, redis.exceptions.OutOfMemoryError):
        raise ApiError(503, "staging_full", "The staging store is full; retry later.", headers=retry_after) from None
    except redis.RedisError:
        raise ApiError(
            503, "staging_unavailable", "Messages cannot be staged now; retry later.", headers=retry_after
        ) from None
    return json_response(body, status=ACCEPTED)


def _single_answer(accepted: services.Accepted) -> dict[str, Any]:
    return {"id": accepted[0]["id"], "status": "accepted"}


@api_view
@methods("GET", "POST")
@write_key_required
def message_write(request: HttpRequest) -> HttpResponse:
    data = payloads.write_data(request)
    clean, errors = message_validate(data)
    if clean is None:
        services.messages_rejected_count(1)
        raise ApiError(400, "invalid_message", "Some fields are not valid.", fields=errors)
    return _stage(request, [clean], _single_answer, "write", [clean])


@api_view
@methods("POST")
@write_key_required
def message_batch(request: HttpRequest) -> HttpResponse:
    items = payloads.batch_items(request)
    checked = [
        (None, {"__all__": [item.parse_error]}) if item.parse_error else message_validate(item.data) for item in items
    ]
    verdicts = [clean for clean, _ in checked]
    accepted = [clean for clean in verdicts if clean is not None]
    if len(accepted) < len(checked):
        services.messages_rejected_count(len(checked) - len(accepted))

    def answer(staged: services.Accepted) -> dict[str, Any]:
        ids = iter(staged)
        results = [
            {"index": i, "status": "accepted", "id": next(ids)["id"]}
            if clean is not None
            else {"index": i, "status": "rejected", "fields": errors}
            for i, (clean, errors) in enumerate(checked)
        ]
        return {"accepted": len(accepted), "rejected": len(checked) - len(accepted), "results": results}

    if not accepted:
        return json_response({"error": "no_valid_messages", **answer([])}, status=400)
    return _stage(request, accepted, answer, "batch", verdicts)


@api_view
@methods("GET")
def message_status(request: HttpRequest, message_id: uuid.UUID) -> HttpResponse:
    try:
        status = selectors.message_status(message_id)
    except (DatabaseError, redis.RedisError) as exc:
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


@api_view
@methods("GET", "POST")
def noop(request: HttpRequest) -> HttpResponse:
    """The benchmark's baseline: the same server and middleware, and no work at all."""
    return json_response({"status": "ok"}, status=ACCEPTED)
