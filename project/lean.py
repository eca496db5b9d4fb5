"""Lean paths: a few hot routes answered by a plain WSGI callable in front of Django's handler.

Apps register lean handlers by view (lean_views_register, from an AppConfig.ready()); the paths
come from the URLconf. A handler gets a LeanRequest and returns a project.http.Answer (or None to
leave the request to Django); what Django's middleware adds to an answer is added the same way.

# Documented in docs/fast-path.md ("Lean paths").
"""

import functools
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from django.utils.log import log_response
from django.utils.module_loading import import_string

from project.conf import cached_settings
from project.http import JSON_CONTENT_TYPE, Answer, ApiError, json_encode, server_error
from project.logs import log_bind, log_unbind, request_id_from

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class LeanRequest:
    """What a lean handler reads of a request: its method, its WSGI environ as `META` (the very
    dict a Django request's META is) and its body, read on demand (`read_body`), once."""

    __slots__ = ("META", "_body", "method")

    def __init__(self, environ: Environ) -> None:
        self.META = environ
        self.method = environ["REQUEST_METHOD"].upper()
        self._body: bytes | None = None

    def read_body(self) -> bytes:
        """CONTENT_LENGTH bytes of wsgi.input, as Django reads them (nothing when it is missing or
        not a number: Django reads no body then either)."""
        if self._body is None:
            try:
                length = max(0, int(self.META.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length = 0
            self._body = self.META["wsgi.input"].read(length) if length else b""
        return self._body


# A handler's answer, or None to let Django answer instead (decided before reading the body).
LeanHandler = Callable[[LeanRequest], Answer | None]

_by_view: dict[Callable[..., Any], LeanHandler] = {}


def lean_views_register(handlers: Mapping[Callable[..., Any], LeanHandler]) -> None:
    """Serve the routes of these Django views with their lean handlers instead of Django's."""
    _by_view.update(handlers)


def lean_paths() -> dict[str, LeanHandler]:
    """The paths served lean, from the URLconf: every route without converters whose view has
    a lean handler (so the URLconf stays the one list of routes)."""
    return dict(_routes(get_resolver().url_patterns, "/"))


def _routes(patterns: Iterable[Any], prefix: str) -> Iterator[tuple[str, LeanHandler]]:
    for entry in patterns:
        if not isinstance(entry.pattern, RoutePattern) or entry.pattern.converters:
            continue
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.callback in _by_view:
            yield prefix + str(entry.pattern), _by_view[entry.callback]


# --- what Django's middleware would do -----------------------------------------------------------

# Middlewares whose additions to a JSON answer depend on nothing but the settings and whether the
# request is secure, so they are applied once to an empty response and the headers reused.
_HEADER_MIDDLEWARES = (
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.security.SecurityMiddleware",
)


def _django_request(environ: Environ) -> WSGIRequest:
    """A Django request for asking Django's own questions (the host, the scheme); never read."""
    return WSGIRequest({**environ, "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()})


def _probe(secure: bool) -> WSGIRequest:
    return _django_request(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "SERVER_NAME": "lean.invalid",
            "SERVER_PORT": "443" if secure else "80",
            "wsgi.url_scheme": "https" if secure else "http",
        }
    )


@functools.cache
def security_headers(secure: bool) -> tuple[tuple[str, str], ...]:
    """The headers Django's middleware (those of _HEADER_MIDDLEWARES in settings.MIDDLEWARE, in
    the order Django applies them to a response) adds to a JSON answer."""
    response = HttpResponse(content_type=JSON_CONTENT_TYPE)
    before = set(response.headers)
    for path in reversed(settings.MIDDLEWARE):
        if path in _HEADER_MIDDLEWARES:
            middleware = import_string(path)(HttpResponse)  # get_response: never called here
            middleware.process_response(_probe(secure), response)
    return tuple((name, value) for name, value in response.headers.items() if name not in before)


@functools.cache
def _django_answers_itself() -> bool:
    """Settings under which Django's request middleware answers a write path itself (redirects,
    refusals by user agent): then every request goes to Django."""
    return bool(settings.PREPEND_WWW or settings.DISALLOWED_USER_AGENTS)


_hosts_checked: dict[str, bool] = {}


def _host_allowed(environ: Environ) -> bool:
    """Django's own verdict (HttpRequest.get_host against ALLOWED_HOSTS), remembered per Host
    header: a refused host goes to Django, which answers 400 and logs it as it always has."""
    host = environ.get("HTTP_HOST")
    if host is None or cached_settings.USE_X_FORWARDED_HOST:
        return False  # rare: Django looks further (X-Forwarded-Host, SERVER_NAME)
    allowed = _hosts_checked.get(host)
    if allowed is None:
        try:
            _django_request(environ).get_host()
            allowed = True
        except DisallowedHost:
            allowed = False
        if len(_hosts_checked) < 1024:  # Host is the client's to choose: bound what is kept
            _hosts_checked[host] = allowed
    return allowed


def _is_secure(environ: Environ) -> bool:
    """Django's HttpRequest.is_secure(), without building the request when no proxy header is
    trusted (settings.SECURE_PROXY_SSL_HEADER)."""
    proxy_header = cached_settings.SECURE_PROXY_SSL_HEADER
    if proxy_header and proxy_header[0] in environ:
        return _django_request(environ).is_secure()
    return environ.get("wsgi.url_scheme") == "https"


@receiver(setting_changed)
def _settings_forget(setting: str, **_: Any) -> None:
    security_headers.cache_clear()
    _django_answers_itself.cache_clear()
    _hosts_checked.clear()


# --- the WSGI side -------------------------------------------------------------------------------

_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _respond(
    environ: Environ, start_response: StartResponse, answer: Answer, request_id: str, secure: bool
) -> list[bytes]:
    body = json_encode(answer.body)
    headers = [*(answer.headers or {}).items(), ("Content-Type", JSON_CONTENT_TYPE)]
    headers += security_headers(secure)
    headers += (("Content-Length", str(len(body))), ("X-Request-ID", request_id))
    start_response(_STATUS_LINES[answer.status], headers)
    if 400 <= answer.status < 500:
        # What Django's handler logs of every 4xx answer ("Bad Request: /message/write/").
        response = HttpResponse(status=answer.status)
        log_response("%s: %s", response.reason_phrase, environ.get("PATH_INFO", ""), response=response)
    return [body]


def lean_application(django_application: WsgiApp) -> WsgiApp:
    """The WSGI entry point: the registered paths through their lean handlers, the rest (and what
    those decline) through `django_application`."""

    handlers = lean_paths()

    def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        handler = handlers.get(environ.get("PATH_INFO", ""))
        if handler is None or _django_answers_itself() or not _host_allowed(environ):
            return django_application(environ, start_response)
        secure = _is_secure(environ)
        if cached_settings.SECURE_SSL_REDIRECT and not secure:
            return django_application(environ, start_response)
        request_id = request_id_from(environ)
        token = log_bind(request_id=request_id)
        try:
            answer = handler(LeanRequest(environ))
        except ApiError as exc:
            answer = exc.answer()
        except Exception as exc:
            # As Django's handler does with a view's exception: logged (with the request's id)
            # and answered by handler500's JSON.
            answer = server_error().answer()
            log_response(
                "%s: %s",
                "Internal Server Error",
                environ.get("PATH_INFO", ""),
                exception=exc,
                response=HttpResponse(status=500),
            )
        finally:
            log_unbind(token)
        if answer is None:
            return django_application(environ, start_response)
        return _respond(environ, start_response, answer, request_id, secure)

    return application
