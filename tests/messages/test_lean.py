"""The lean write handler (messages.lean, dispatched by project.wsgi): it serves exactly the write
paths, answers as Django's views do (headers included), and leaves Django what Django's
middleware would answer itself. The contract itself is tested against both handlers by the
write tests (their `write_client` fixture)."""

import json
import logging
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve

from messages import views
from messages.lean import HANDLERS
from project.lean import lean_paths
from tests.lean_client import LeanClient


def lean_client(**defaults: Any) -> Any:
    """A LeanClient; its responses say which handler answered (`served_by`), unknown to mypy."""
    return LeanClient(**defaults)


GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


def post_json(client: Client, path: str, body: object, **headers: str):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_the_lean_paths_are_the_routes_of_the_write_views():
    paths = lean_paths()
    assert {path: resolve(path).func for path in paths} == {
        "/message/write/": views.message_write,
        "/message/write": views.message_write,
        "/message/batch/": views.message_batch,
        "/message/batch": views.message_batch,
    }
    assert paths == {path: HANDLERS[resolve(path).func] for path in paths}


@pytest.mark.parametrize("path", ["/message/write/", "/message/write"])
def test_writes_json_forms_and_queries_are_served_lean(path):
    client = lean_client()
    assert post_json(client, path, GOOD).served_by == "lean"
    assert client.get(path, GOOD).served_by == "lean"
    form = client.post(
        path, data="username=a&city=b&state=c&message=d", content_type="application/x-www-form-urlencoded"
    )
    assert (form.status_code, form.served_by) == (202, "lean")
    assert post_json(client, path.replace("write", "batch"), [GOOD]).served_by == "lean"
    assert client.get("/healthz").served_by == "django"


def test_a_multipart_form_is_left_to_djangos_parser():
    response = lean_client().post("/message/write/", data=GOOD)
    assert (response.status_code, response.served_by) == (202, "django")


REQUESTS = [
    ("202", lambda c: post_json(c, "/message/write/", GOOD)),
    ("202 batch", lambda c: post_json(c, "/message/batch/", [GOOD, {}])),
    ("400", lambda c: post_json(c, "/message/write/", {"username": "x"})),
    ("405", lambda c: c.delete("/message/batch/")),
    ("415", lambda c: c.post("/message/write/", data="x", content_type="text/plain")),
]


@pytest.mark.parametrize(("name", "send"), REQUESTS, ids=[name for name, _ in REQUESTS])
def test_both_handlers_answer_with_the_same_headers(name, send):
    django, lean = send(Client(HTTP_HOST="testserver")), send(lean_client())
    assert lean.served_by == "lean"
    assert django.status_code == lean.status_code
    assert set(django.headers) == set(lean.headers)
    for header in set(django.headers) - {"X-Request-ID", "RateLimit-Remaining", "Content-Length"}:
        assert django[header] == lean[header], header
    if name.startswith("4"):
        assert django.content == lean.content


def test_hsts_is_sent_on_secure_requests_as_django_sends_it(settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    secure = post_json(lean_client(), "/message/write/", GOOD, **{"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in secure  # the proxy's header is not trusted by default
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    for client in (Client(HTTP_HOST="testserver"), LeanClient()):
        secure = post_json(client, "/message/write/", GOOD, **{"X-Forwarded-Proto": "https"})
        assert secure["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
        assert "Strict-Transport-Security" not in post_json(client, "/message/write/", GOOD)


def test_under_ssl_redirect_a_plain_request_is_left_to_django(settings):
    settings.SECURE_SSL_REDIRECT = True
    # Django's handler in project.wsgi read its middleware's settings when it was built, before
    # this override: that it redirects is Django's business; that it is asked is ours.
    assert post_json(lean_client(), "/message/write/", GOOD).served_by == "django"
    secure = lean_client().post("/message/write/", data=GOOD, content_type="application/json", secure=True)
    assert (secure.status_code, secure.served_by) == (202, "lean")


def test_a_host_not_allowed_is_djangos_400():
    response = post_json(lean_client(HTTP_HOST="evil.example"), "/message/write/", GOOD)
    assert (response.status_code, response.served_by) == (400, "django")


def test_the_request_id_is_taken_when_sane_and_minted_otherwise():
    client = lean_client()
    assert post_json(client, "/message/write/", GOOD, **{"X-Request-ID": "front-42"})["X-Request-ID"] == "front-42"
    minted = post_json(client, "/message/write/", GOOD, **{"X-Request-ID": "bad id\n"})["X-Request-ID"]
    assert len(minted) == 32 and minted != post_json(client, "/message/write/", GOOD)["X-Request-ID"]


def test_a_refusal_is_logged_as_django_logs_it(caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        post_json(lean_client(), "/message/write/", {"username": "x"})
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert (record.getMessage(), record.status_code) == ("Bad Request: /message/write/", 400)


def test_a_bug_is_a_json_500_and_logged(monkeypatch, caplog):
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "message_write_answer", broken)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = post_json(lean_client(), "/message/write/", GOOD)
    assert (response.status_code, response.json()["error"]) == (500, "server_error")
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
