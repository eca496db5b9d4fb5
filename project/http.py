"""The JSON error shape every endpoint shares, and the decorator that produces it.

Errors look like {"error": "<stable code>", "message": "<for humans>", "fields": {...}}, with
"fields" present when specific input fields are at fault. Also the few things every endpoint
reads or writes the same way: bearer credentials and timestamps.
"""

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

JSON_CONTENT_TYPE = "application/json"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


def timestamp(moment: datetime | None) -> str | None:
    """The API's one timestamp format: ISO 8601 in UTC to the millisecond, with a Z
    ("2026-11-25T17:35:06.123Z"). Aware datetimes only."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer <token>` header: None when there is no
    Authorization header, "" when it holds another scheme or no token. The scheme is
    case-insensitive (RFC 7235). Read from request.META rather than request.headers: the
    latter builds a dict of every header, a cost the write path would pay on every request."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


class ApiError(Exception):
    """Raise from a view or service to answer with the shared JSON error shape."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        fields: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.fields = fields
        self.headers = headers

    def response(self) -> HttpResponse:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return json_response(body, status=self.status, headers=self.headers)


def api_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn ApiError into its JSON response; mark the view CSRF-exempt (clients are not browsers
    with ambient credentials: authentication is by header)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApiError as exc:
            return exc.response()

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]
    return wrapper


def methods(*allowed: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Like require_http_methods, but answering 405 in the JSON error shape."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"Use {' or '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)},
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return ApiError(404, "not_found", "No such endpoint.").response()


def handler500(request: HttpRequest) -> HttpResponse:
    return ApiError(500, "server_error", "Internal error; it has been logged.").response()
