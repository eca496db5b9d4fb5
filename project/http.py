"""The JSON error shape every endpoint shares, and the decorator that produces it.

Errors look like {"error": "<stable code>", "message": "<for humans>", "fields": {...}}, with
"fields" present when specific input fields are at fault. Also the few things every endpoint
reads or writes the same way: bearer credentials, the client's address and timestamps.
"""

import functools
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware

JSON_CONTENT_TYPE = "application/json"


def json_encode(body: Any) -> bytes:
    """The bytes of every JSON answer (Django's and project.lean's alike)."""
    return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(json_encode(body), status=status, content_type=JSON_CONTENT_TYPE, headers=headers)


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer before it is a response of any framework: endpoints that are served both by
    a Django view and by a lean handler (project.lean) build one, and each turns it into its own."""

    status: int
    body: Any
    headers: Mapping[str, str] | None = None

    def response(self) -> HttpResponse:
        return json_response(self.body, status=self.status, headers=self.headers)


def timestamp(moment: datetime | None) -> str | None:
    """The API's one timestamp format: ISO 8601 in UTC to the millisecond, with a Z
    ("2026-11-25T17:35:06.123Z"). Aware datetimes only."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bearer_token(meta: Mapping[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header: None when there is no
    Authorization header, "" when it holds another scheme or no token. The scheme is
    case-insensitive (RFC 7235). `meta`: the WSGI environ (a Django request's META), rather than
    request.headers: the latter builds a dict of every header, a cost the write path would pay
    on every request."""
    header = meta.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


_trusted_proxies: frozenset[str] | None = None
_front_secret: bytes | None = None
# The header the front door sets to MESSY_FRONT_SECRET (deploy/nginx.conf.template).
FRONT_SECRET_HEADER = "HTTP_X_MESSY_FRONT_SECRET"  # noqa: S105 (a header name)


@receiver(setting_changed)
def _trusted_proxies_forget(setting: str, **_: Any) -> None:
    global _trusted_proxies, _front_secret
    if setting in ("MESSY_TRUSTED_PROXIES", "MESSY_FRONT_SECRET"):
        _trusted_proxies = _front_secret = None


def _from_front_door(meta: Mapping[str, Any]) -> bool:
    """Whether a request from a trusted proxy's address carries MESSY_FRONT_SECRET (always, when
    none is set). Across hosts an address proves little (a shared network, another tenant of the
    proxy's host): the secret the front door adds is what says the header came from it."""
    global _front_secret
    secret = _front_secret
    if secret is None:
        secret = _front_secret = settings.MESSY_FRONT_SECRET.encode()
    if not secret:
        return True
    return hmac.compare_digest(meta.get(FRONT_SECRET_HEADER, "").encode("latin-1", "replace"), secret)


def client_ip(meta: Mapping[str, Any]) -> str:
    """The address of the client that sent the request: REMOTE_ADDR, unless that is one of
    MESSY_TRUSTED_PROXIES (and the request carries MESSY_FRONT_SECRET, when one is set), in which
    case the address that proxy put in X-Forwarded-For (the rightmost entry that is not itself a
    trusted proxy). Anything else in the header was written by the client and is ignored, so a
    client cannot pick the address its quota is charged to.

    `meta`: the WSGI environ (a Django request's META). On the write path: the trusted set is
    built once per process, not per request.
    """
    global _trusted_proxies
    remote = meta.get("REMOTE_ADDR", "")
    trusted = _trusted_proxies
    if trusted is None:
        # "": a peer on gunicorn's Unix socket (runserver.sh's MESSY_SOCKET), which only a
        # process on this host can reach: the front door, trusted as loopback is.
        trusted = _trusted_proxies = frozenset([*settings.MESSY_TRUSTED_PROXIES, ""])
    if remote not in trusted:
        return remote
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or not _from_front_door(meta):
        return remote
    hops = [hop.strip() for hop in forwarded.split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted:
            return hop
    # Every hop is a trusted proxy: the client itself runs on a proxy's host.
    return next((hop for hop in hops if hop), remote)


def client_network(address: str) -> str:
    """What per-address limits count against: the address itself, or for IPv6 its /64 (one
    subscriber's network: a client that holds a /64 could otherwise take a new address per
    request). Not an IP address (a proxy's odd header): returned as it is."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1: an IPv4 client, counted by its own address
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


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

    def answer(self) -> Answer:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return Answer(self.status, body, self.headers)

    def response(self) -> HttpResponse:
        return self.answer().response()


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


def method_check(method: str | None, allowed: tuple[str, ...]) -> None:
    """405 in the JSON error shape, with Allow, unless `method` is one of `allowed`."""
    if method not in allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            f"Use {' or '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )


def methods(*allowed: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Like require_http_methods, but answering 405 in the JSON error shape."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            method_check(request.method, allowed)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return ApiError(404, "not_found", "No such endpoint.").response()


def server_error() -> ApiError:
    """The answer to a bug: Django's handler500 and the lean handlers' (project.lean)."""
    return ApiError(500, "server_error", "Internal error; it has been logged.")


def handler500(request: HttpRequest) -> HttpResponse:
    return server_error().response()


class CommonMiddleware(DjangoCommonMiddleware):
    """Django's, except that a request other than GET or HEAD to a path that exists only with a
    trailing slash is answered 404 in JSON, naming the right path, instead of a 301 that
    clients follow with a GET (losing the body) or, under DEBUG, a RuntimeError."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            response.status_code == 404
            and request.method not in ("GET", "HEAD")
            and self.should_redirect_with_slash(request)
        ):
            return ApiError(
                404, "not_found", f"No such endpoint: use {request.path}/ (with the trailing slash)."
            ).response()
        return super().process_response(request, response)
