"""A test client for the WSGI entry point: Django's test Client, but calling
project.wsgi.application (which serves the lean paths itself, project.lean, and the rest
through Django's handler) instead of Django's handler directly."""

from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse
from django.test import Client


class _WsgiHandler:
    """Calls project.wsgi.application with the test client's environ and turns what it starts
    and returns into an HttpResponse, for the test client's assertions."""

    def __call__(self, environ: dict[str, Any]) -> HttpResponse:
        from project.wsgi import application

        started: dict[str, Any] = {}
        entered: list[bool] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            started.update(status=status, headers=headers)
            return lambda data: None

        def on_request_started(**_: Any) -> None:
            entered.append(True)

        # As Django's own test handler does: the test's transaction keeps its connection.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        request_started.connect(on_request_started)
        try:
            chunks: Iterable[bytes] = application(environ, start_response)
            try:
                content = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        finally:
            request_started.disconnect(on_request_started)
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        response = HttpResponse(content, status=int(started["status"].split(" ", 1)[0]))
        del response["Content-Type"]
        for name, value in started["headers"]:
            response[name] = value
        # Which handler answered: Django's sends request_started, the lean one does not.
        response.served_by = "django" if entered else "lean"  # type: ignore[attr-defined]
        response.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]  # what the test Client reads
        return response


class LeanClient(Client):
    """Django's test Client, through the WSGI entry point (the lean paths and Django's)."""

    def __init__(self, **defaults: Any) -> None:
        # A Host header, as every HTTP/1.1 client sends (the lean path leaves requests without
        # one to Django).
        super().__init__(**{"HTTP_HOST": "testserver", **defaults})
        self.handler = _WsgiHandler()  # type: ignore[assignment]
