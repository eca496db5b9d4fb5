"""The OpenAPI document (project/openapi.yaml) against the code it describes.

- It is valid OpenAPI 3.1.
- Every routed URL is in it with the methods its view answers, and nothing else is.
- Every documented (path, method, status) has a case below that makes the real view, on the
  real services, produce it; the body matches the documented schema and documented headers are
  sent. A status documented but never produced, or produced but not documented, fails.
- The docs page loads only assets served from this host.
"""

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from openapi_spec_validator import validate

from messages import services as message_services
from messages import staging
from project.api_docs import schema
from project.redis import redis_client_reset
from project.storage import bucket_ensure
from stats.services.publish import stats_publish
from tasks.auth import api_token_create, page_token
from tasks.importing import import_job_create
from tasks.models import Job
from tests.conftest import free_port
from tests.lean_client import LeanClient

SCHEMA = schema()
METHODS = ("get", "post", "put", "patch", "delete")
# Not part of the API: Django's admin, the benchmark's baseline view and its Django-served write
# endpoints (routed only when MESSY_BENCH_ENDPOINTS is on, as in the test settings), and the
# pages' script and style files.
# /tasks/import/check/: the front door's own check of an upload's credentials (nginx auth_request).
NOT_DESCRIBED = ("/admin/", "/message/noop/", "/message/django/", "/tasks/import/check/")
PAGE_ASSETS = (".js", ".css")
# Views that answer every method. Only the methods that mean something are documented.
ANY_METHOD = {"/metrics": {"get"}}
# What the test client returns (an HttpResponse with .json() and more).
Response = Any
GOOD = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


# --- the document ----------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    assert SCHEMA["openapi"].startswith("3.1.")
    validate(SCHEMA)


def test_it_is_served_as_json_and_as_yaml():
    assert Client().get("/api/schema/").json() == SCHEMA
    response = Client().get("/api/schema/?format=yaml")
    assert response["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.content) == SCHEMA


# --- routes ----------------------------------------------------------------------------------


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    """Every routed path, in OpenAPI's spelling (/tasks/jobs/{job_id}/)."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def routed_paths() -> set[str]:
    routed = {
        path
        for path in _routes(get_resolver().url_patterns)
        if not path.startswith(NOT_DESCRIBED) and not path.endswith(PAGE_ASSETS)
    }
    # A path also routed without its trailing slash (the write paths) is documented once, with it.
    return {path for path in routed if path + "/" not in routed}


def _concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", str(uuid.uuid4()), path)


def answered_methods(path: str) -> set[str]:
    """The methods the view answers with anything but 405 (before any credential check)."""
    client = Client()
    return {m for m in METHODS if getattr(client, m)(_concrete(path)).status_code != 405}


def test_every_routed_url_is_documented_and_every_documented_path_is_routed():
    assert routed_paths() == set(SCHEMA["paths"])


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted(SCHEMA["paths"]))
def test_each_path_documents_exactly_the_methods_its_view_answers(path):
    documented = {m for m in SCHEMA["paths"][path] if m in METHODS}
    if path in ANY_METHOD:
        assert documented == ANY_METHOD[path]
        return
    assert answered_methods(path) == documented


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted(set(SCHEMA["paths"]) - set(ANY_METHOD)))
def test_other_methods_get_405_with_allow(path):
    documented = {m for m in SCHEMA["paths"][path] if m in METHODS}
    for method in set(METHODS) - documented:
        response = getattr(Client(), method)(_concrete(path))
        assert response.status_code == 405
        assert "GET" in response["Allow"] or "POST" in response["Allow"]
        if response["Content-Type"].startswith("application/json"):
            _body_valid(response, SCHEMA["components"]["responses"]["MethodNotAllowed"])


# --- every documented status, produced -------------------------------------------------------


@dataclass
class Ctx:
    settings: Any
    token: str
    # What the write endpoints are called with: Django's test Client, or LeanClient (the WSGI
    # entry point, where the lean handler serves them).
    write_client: type[Client] = Client

    @property
    def api(self) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {self.token}")

    def job(self, status: str = Job.Status.QUEUED, report: bool = False) -> Job:
        job = import_job_create(_io(b'{"username": "a"}\n'), name="t.ndjson", enqueue=False)
        Job.objects.filter(pk=job.pk).update(status=status, result_key="jobs/x/report.ndjson" if report else "")
        job.refresh_from_db()
        return job

    def staff(self, is_staff: bool = True, csrf: bool = False) -> Client:
        user = get_user_model().objects.create_user(f"u{uuid.uuid4().hex[:8]}", password="x", is_staff=is_staff)
        if is_staff:  # an operator's account: every jobs API scope (tasks.auth)
            user.user_permissions.add(Permission.objects.get(codename="scope_admin"))
        client = Client(enforce_csrf_checks=csrf)
        client.force_login(user)
        return client


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def post_json(client: Client, path: str, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=raw, content_type="application/json", headers=headers)


def keys_required(ctx: Ctx) -> None:
    ctx.settings.MESSY_REQUIRE_WRITE_API_KEY = True
    ctx.settings.MESSY_WRITE_API_KEYS = ["right-key"]


def _with_api_keys(request: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    def run(ctx: Ctx) -> Response:
        keys_required(ctx)
        return request(ctx)

    return run


def _stats_login_required(request: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    def run(ctx: Ctx) -> Response:
        ctx.settings.STATS_LOGIN_REQUIRED = True
        return request(ctx)

    return run


def idempotency_reused(send: Callable[[Client, dict[str, Any]], Response]) -> Callable[[Ctx], Response]:
    def run(ctx: Ctx) -> Response:
        client = ctx.write_client(HTTP_IDEMPOTENCY_KEY="key-1")
        assert send(client, GOOD).status_code == 202
        return send(client, {**GOOD, "message": "another"})

    return run


def id_conflict(send: Callable[[Client, dict[str, Any]], Response]) -> Callable[[Ctx], Response]:
    """A message sent with the client's own id, then that id again with other content."""

    def run(ctx: Ctx) -> Response:
        client = ctx.write_client()
        own = {**GOOD, "id": "0192d6c0-1a2b-7c3d-8e4f-0123456789ab"}
        assert send(client, own).status_code == 202
        return send(client, {**own, "message": "another"})

    return run


def backlog_full(request: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    def run(ctx: Ctx) -> Response:
        ctx.settings.MESSY_BACKLOG_MAX = 0
        return request(ctx)

    return run


def redis_down(request: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    def run(ctx: Ctx) -> Response:
        ctx.settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
        ctx.settings.REDIS_TIMEOUT = 0.2
        redis_client_reset()
        try:
            return request(ctx)
        finally:
            redis_client_reset()

    return run


def over_quota(request: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    """A bucket of one message that hardly refills: the first request spends it."""

    def run(ctx: Ctx) -> Response:
        ctx.settings.MESSY_QUOTA_RATE = 0.001
        ctx.settings.MESSY_QUOTA_BURST = 1
        assert request(ctx).status_code == 202
        return request(ctx)

    return run


def failures_exhausted(method: str, path_of: Callable[[Ctx], str]) -> Callable[[Ctx], Response]:
    """One wrong token allowed per address, and spent: the next attempt is refused."""

    def run(ctx: Ctx) -> Response:
        ctx.settings.MESSY_AUTH_FAILURES_MAX = 1
        guesser = Client(HTTP_AUTHORIZATION="Bearer wrong")
        assert guesser.get("/tasks/jobs/").status_code == 403
        return getattr(guesser, method)(path_of(ctx))

    return run


def database_down(ctx: Ctx) -> Response:
    """PostgreSQL unreachable: the connection is pointed at a port nothing listens on."""
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        return Client().get(f"/message/{uuid.uuid4()}/")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved


def stored_message(ctx: Ctx) -> Response:
    message_id = post_json(Client(), "/message/write/", GOOD).json()["id"]
    message_services.messages_drain(staging.shards()[0], slot=0)
    response = Client().get(f"/message/{message_id}/")
    assert response.json()["status"] == "stored"
    return response


def stats_published(ctx: Ctx) -> Response:
    stats_publish(force=True)
    return Client().get("/stat/get/")


def import_too_large(ctx: Ctx) -> Response:
    ctx.settings.MESSY_IMPORT_MAX_BYTES = 10
    return ctx.api.post("/tasks/import/", data=b'{"username": "a"}\n' * 10, content_type="application/x-ndjson")


def write_get(query: dict[str, str], **headers: str) -> Callable[[Ctx], Response]:
    return lambda ctx: ctx.write_client().get("/message/write/", query, headers=headers)


W, B, JOB = "/message/write/", "/message/batch/", "/tasks/jobs/{job_id}/"
NDJSON = "application/x-ndjson"


def case(path: str, method: str, status: int, request: Callable[[Ctx], Response], name: str = "") -> Any:
    return pytest.param(path, method, status, request, id=f"{method.upper()} {path} {status} {name}".strip())


CASES = [
    # POST /message/write/
    case(W, "post", 202, lambda ctx: post_json(ctx.write_client(), W, GOOD)),
    case(W, "post", 202, lambda ctx: ctx.write_client().post(W, GOOD), "form"),
    case(W, "post", 400, lambda ctx: post_json(ctx.write_client(), W, {"username": "ada"}), "invalid_message"),
    case(W, "post", 400, lambda ctx: post_json(ctx.write_client(), W, b"{"), "malformed_json"),
    case(W, "post", 401, _with_api_keys(lambda ctx: post_json(ctx.write_client(), W, GOOD))),
    case(W, "post", 403, _with_api_keys(lambda ctx: post_json(ctx.write_client(), W, GOOD, **{"X-API-Key": "wrong"}))),
    case(
        W,
        "post",
        202,
        _with_api_keys(lambda ctx: post_json(ctx.write_client(), W, GOOD, Authorization="Bearer right-key")),
        "bearer key",
    ),
    case(W, "post", 413, lambda ctx: post_json(ctx.write_client(), W, {**GOOD, "pad": "x" * 40_000})),
    case(W, "post", 415, lambda ctx: ctx.write_client().post(W, data="hello", content_type="text/plain")),
    case(W, "post", 409, id_conflict(lambda client, body: post_json(client, W, body))),
    case(W, "post", 422, idempotency_reused(lambda client, body: post_json(client, W, body))),
    case(W, "post", 429, over_quota(lambda ctx: post_json(ctx.write_client(), W, GOOD))),
    case(W, "post", 503, backlog_full(lambda ctx: post_json(ctx.write_client(), W, GOOD)), "backlog_full"),
    case(W, "post", 503, redis_down(lambda ctx: post_json(ctx.write_client(), W, GOOD)), "staging_unavailable"),
    # GET /message/write/
    case(W, "get", 202, write_get(GOOD)),
    case(W, "get", 400, write_get({"username": "ada"})),
    case(W, "get", 401, _with_api_keys(write_get(GOOD))),
    case(W, "get", 403, _with_api_keys(write_get(GOOD, **{"X-API-Key": "wrong"}))),
    case(W, "get", 409, id_conflict(lambda client, body: client.get(W, body))),
    case(W, "get", 422, idempotency_reused(lambda client, body: client.get(W, body))),
    case(W, "get", 429, over_quota(write_get(GOOD))),
    case(W, "get", 503, backlog_full(write_get(GOOD))),
    # POST /message/batch/
    case(B, "post", 202, lambda ctx: post_json(ctx.write_client(), B, [GOOD, {"username": "x"}])),
    case(
        B,
        "post",
        202,
        lambda ctx: ctx.write_client().post(B, data=json.dumps(GOOD) + "\nnot json\n", content_type=NDJSON),
    ),
    case(B, "post", 400, lambda ctx: post_json(ctx.write_client(), B, [{"username": "x"}]), "no_valid_messages"),
    case(B, "post", 400, lambda ctx: post_json(ctx.write_client(), B, b"  "), "empty_batch"),
    case(B, "post", 401, _with_api_keys(lambda ctx: post_json(ctx.write_client(), B, [GOOD]))),
    case(
        B, "post", 403, _with_api_keys(lambda ctx: post_json(ctx.write_client(), B, [GOOD], Authorization="Bearer no"))
    ),
    case(B, "post", 413, lambda ctx: post_json(ctx.write_client(), B, [GOOD] * 1001), "too_many_items"),
    case(B, "post", 415, lambda ctx: ctx.write_client().post(B, data="x", content_type="text/csv")),
    case(B, "post", 409, id_conflict(lambda client, body: post_json(client, B, [body]))),
    case(B, "post", 422, idempotency_reused(lambda client, body: post_json(client, B, [body]))),
    case(B, "post", 429, over_quota(lambda ctx: post_json(ctx.write_client(), B, [GOOD]))),
    case(B, "post", 503, redis_down(lambda ctx: post_json(ctx.write_client(), B, [GOOD]))),
    # GET /message/{message_id}/
    case("/message/{message_id}/", "get", 200, lambda ctx: Client().get(f"/message/{write_id()}/"), "pending"),
    case("/message/{message_id}/", "get", 200, stored_message, "stored"),
    case("/message/{message_id}/", "get", 404, lambda ctx: Client().get(f"/message/{uuid.uuid4()}/")),
    case("/message/{message_id}/", "get", 401, _with_api_keys(lambda ctx: Client().get(f"/message/{uuid.uuid4()}/"))),
    case(
        "/message/{message_id}/",
        "get",
        403,
        _with_api_keys(lambda ctx: Client().get(f"/message/{uuid.uuid4()}/", headers={"X-API-Key": "wrong"})),
    ),
    case("/message/{message_id}/", "get", 503, database_down),
    # stats
    case("/stat/get/", "get", 302, stats_published),
    case("/stat/get/", "get", 503, lambda ctx: Client().get("/stat/get/"), "stats_not_published"),
    case("/stat/get/", "get", 401, _stats_login_required(lambda ctx: Client().get("/stat/get/"))),
    case("/stat/get/", "get", 403, _stats_login_required(lambda ctx: ctx.staff(is_staff=False).get("/stat/get/"))),
    case("/stat/", "get", 200, lambda ctx: Client().get("/stat/")),
    case("/stat/", "get", 200, _stats_login_required(lambda ctx: ctx.staff().get("/stat/")), "staff"),
    case("/stat/", "get", 302, _stats_login_required(lambda ctx: Client().get("/stat/"))),
    # POST /tasks/import/
    case(
        "/tasks/import/",
        "post",
        202,
        lambda ctx: ctx.api.post("/tasks/import/", {"file": _named(b'{"username": "a"}\n', "a.ndjson")}),
        "multipart",
    ),
    case(
        "/tasks/import/",
        "post",
        202,
        lambda ctx: ctx.api.post("/tasks/import/?name=x.csv", data=b"username\n", content_type="text/csv"),
        "raw body",
    ),
    case(
        "/tasks/import/",
        "post",
        400,
        lambda ctx: ctx.api.post("/tasks/import/?format=xml", data=b"x", content_type="text/csv"),
    ),
    case("/tasks/import/", "post", 401, lambda ctx: Client().post("/tasks/import/", data=b"x", content_type=NDJSON)),
    case(
        "/tasks/import/",
        "post",
        403,
        lambda ctx: Client(HTTP_AUTHORIZATION="Bearer nope").post("/tasks/import/", data=b"x", content_type=NDJSON),
    ),
    case("/tasks/import/", "post", 413, import_too_large),
    case("/tasks/import/", "post", 429, failures_exhausted("post", lambda ctx: "/tasks/import/")),
    # /tasks/erase/
    case("/tasks/erase/", "get", 200, lambda ctx: ctx.api.get("/tasks/erase/")),
    case("/tasks/erase/", "get", 401, lambda ctx: Client().get("/tasks/erase/")),
    case("/tasks/erase/", "get", 403, lambda ctx: ctx.staff(is_staff=False).get("/tasks/erase/"), "staff_required"),
    case("/tasks/erase/", "post", 202, lambda ctx: post_json(ctx.api, "/tasks/erase/", {"username": "ada"})),
    case(
        "/tasks/erase/",
        "post",
        202,
        lambda ctx: ctx.staff().post("/tasks/erase/", "username=ada", content_type="application/x-www-form-urlencoded"),
        "staff session, form",
    ),
    case("/tasks/erase/", "post", 400, lambda ctx: post_json(ctx.api, "/tasks/erase/", {"username": " "})),
    case("/tasks/erase/", "post", 401, lambda ctx: post_json(Client(), "/tasks/erase/", {"username": "ada"})),
    case(
        "/tasks/erase/",
        "post",
        403,
        lambda ctx: post_json(ctx.staff(csrf=True), "/tasks/erase/", {"username": "ada"}),
        "csrf_failed",
    ),
    case(
        "/tasks/erase/",
        "post",
        413,
        lambda ctx: post_json(ctx.api, "/tasks/erase/", {"username": "ada", "pad": "x" * 40_000}),
    ),
    case(
        "/tasks/erase/",
        "post",
        415,
        lambda ctx: ctx.api.post("/tasks/erase/", data="ada", content_type="text/plain"),
    ),
    case("/tasks/erase/", "get", 429, failures_exhausted("get", lambda ctx: "/tasks/erase/")),
    case("/tasks/erase/", "post", 429, failures_exhausted("post", lambda ctx: "/tasks/erase/")),
    # /tasks/jobs/
    case("/tasks/jobs/", "get", 200, lambda ctx: (ctx.job(), ctx.api.get("/tasks/jobs/?kind=import"))[1]),
    case("/tasks/jobs/", "get", 400, lambda ctx: ctx.api.get("/tasks/jobs/?status=done")),
    case("/tasks/jobs/", "get", 401, lambda ctx: Client().get("/tasks/jobs/")),
    case("/tasks/jobs/", "get", 403, lambda ctx: Client(HTTP_AUTHORIZATION="Bearer x").get("/tasks/jobs/")),
    case("/tasks/jobs/", "get", 403, lambda ctx: scoped("import").get("/tasks/jobs/"), "insufficient_scope"),
    case("/tasks/jobs/", "get", 403, lambda ctx: scoped("read", expired=True).get("/tasks/jobs/"), "token_expired"),
    case("/tasks/jobs/", "get", 429, failures_exhausted("get", lambda ctx: "/tasks/jobs/")),
    # /tasks/jobs/{job_id}/
    case(JOB, "get", 200, lambda ctx: ctx.api.get(f"/tasks/jobs/{ctx.job().pk}/")),
    case(JOB, "get", 200, lambda ctx: _with_link(Client(), "/tasks/jobs/{}/", ctx.job()), "page link"),
    case(JOB, "get", 401, lambda ctx: Client().get(f"/tasks/jobs/{ctx.job().pk}/")),
    case(JOB, "get", 403, lambda ctx: Client().get(f"/tasks/jobs/{ctx.job().pk}/?t=forged"), "invalid_link"),
    case(JOB, "get", 404, lambda ctx: ctx.api.get(f"/tasks/jobs/{uuid.uuid4()}/")),
    case(JOB, "get", 429, failures_exhausted("get", lambda ctx: f"/tasks/jobs/{ctx.job().pk}/")),
    # cancel
    case(JOB + "cancel/", "post", 202, lambda ctx: ctx.api.post(f"/tasks/jobs/{ctx.job().pk}/cancel/")),
    case(JOB + "cancel/", "post", 401, lambda ctx: Client().post(f"/tasks/jobs/{ctx.job().pk}/cancel/")),
    case(
        JOB + "cancel/",
        "post",
        403,
        lambda ctx: Client(HTTP_AUTHORIZATION="Bearer x").post(f"/tasks/jobs/{ctx.job().pk}/cancel/"),
    ),
    case(JOB + "cancel/", "post", 404, lambda ctx: ctx.api.post(f"/tasks/jobs/{uuid.uuid4()}/cancel/")),
    case(JOB + "cancel/", "post", 429, failures_exhausted("post", lambda ctx: f"/tasks/jobs/{ctx.job().pk}/cancel/")),
    case(
        JOB + "cancel/",
        "post",
        409,
        lambda ctx: ctx.api.post(f"/tasks/jobs/{ctx.job(Job.Status.SUCCEEDED).pk}/cancel/"),
    ),
    # report
    case(JOB + "report/", "get", 302, lambda ctx: ctx.api.get(f"/tasks/jobs/{ctx.job(report=True).pk}/report/")),
    case(JOB + "report/", "get", 401, lambda ctx: Client().get(f"/tasks/jobs/{ctx.job().pk}/report/")),
    case(
        JOB + "report/",
        "get",
        403,
        lambda ctx: Client().get(f"/tasks/jobs/{ctx.job().pk}/report/?t={page_token(uuid.uuid4())}"),
    ),
    case(JOB + "report/", "get", 404, lambda ctx: ctx.api.get(f"/tasks/jobs/{ctx.job().pk}/report/"), "no_report"),
    case(JOB + "report/", "get", 429, failures_exhausted("get", lambda ctx: f"/tasks/jobs/{ctx.job().pk}/report/")),
    # the progress page
    case("/tasks/{job_id}/", "get", 200, lambda ctx: _with_link(Client(), "/tasks/{}/", ctx.job())),
    case("/tasks/{job_id}/", "get", 401, lambda ctx: Client().get(f"/tasks/{ctx.job().pk}/")),
    case("/tasks/{job_id}/", "get", 403, lambda ctx: Client().get(f"/tasks/{ctx.job().pk}/?t=x")),
    case("/tasks/{job_id}/", "get", 404, lambda ctx: ctx.api.get(f"/tasks/{uuid.uuid4()}/")),
    case("/tasks/{job_id}/", "get", 429, failures_exhausted("get", lambda ctx: f"/tasks/{ctx.job().pk}/")),
    # operations
    case("/", "get", 200, lambda ctx: Client().get("/", HTTP_ACCEPT="application/json")),
    case("/healthz", "get", 200, lambda ctx: Client().get("/healthz")),
    case("/readyz", "get", 200, lambda ctx: Client().get("/readyz")),
    case("/readyz", "get", 503, redis_down(lambda ctx: Client().get("/readyz"))),
    case("/status", "get", 200, lambda ctx: Client().get("/status")),
    case("/metrics", "get", 200, lambda ctx: Client().get("/metrics")),
    # Through a front door (a forwarded address): not an operator's direct request.
    case("/status", "get", 401, lambda ctx: Client().get("/status", HTTP_X_FORWARDED_FOR="203.0.113.7")),
    case("/metrics", "get", 401, lambda ctx: Client().get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.7")),
    case(
        "/status", "get", 403, lambda ctx: Client().get("/status", HTTP_AUTHORIZATION="Bearer not-the-operator-token")
    ),
    case("/metrics", "get", 403, lambda ctx: Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")),
    case("/api/schema/", "get", 200, lambda ctx: Client().get("/api/schema/")),
    case("/api/schema/", "get", 200, lambda ctx: Client().get("/api/schema/?format=yaml"), "yaml"),
    case("/api/schema/", "get", 400, lambda ctx: Client().get("/api/schema/?format=xml")),
    case("/api/docs/", "get", 200, lambda ctx: Client().get("/api/docs/")),
]


def write_id() -> str:
    return post_json(Client(), W, GOOD).json()["id"]


def _named(data: bytes, name: str) -> Any:
    upload = _io(data)
    upload.name = name
    return upload


def scoped(*scopes: str, expired: bool = False) -> Client:
    """A client whose token has only these scopes (and has expired, if asked)."""
    expires_at = timezone.now() - timedelta(seconds=1) if expired else None
    _, raw = api_token_create(f"scoped-{uuid.uuid4().hex[:8]}", scopes, expires_at)
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def _with_link(client: Client, path: str, job: Job) -> Response:
    return client.get(path.format(job.pk) + f"?t={page_token(job.pk)}")


def documented_statuses() -> set[tuple[str, str, int]]:
    return {
        (path, method, int(status))
        for path, item in SCHEMA["paths"].items()
        for method, operation in item.items()
        if method in METHODS
        for status in operation["responses"]
    }


def test_every_documented_status_has_a_case_and_every_case_is_documented():
    cases = {(p.values[0], p.values[1], p.values[2]) for p in CASES}
    assert cases == documented_statuses()


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _body_valid(response: Response, documented: dict[str, Any]) -> None:
    documented = _deref(documented)
    content = documented.get("content")
    if not content:
        return
    media_type = response["Content-Type"].split(";")[0].strip()
    assert media_type in content, f"{media_type} is not documented"
    if media_type != "application/json":
        return
    body_schema = {**content[media_type]["schema"], "components": SCHEMA["components"]}
    jsonschema.validate(
        json.loads(response.content),
        body_schema,
        cls=jsonschema.Draft202012Validator,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


@pytest.fixture
def ctx(settings: Any, s3_server: str) -> Ctx:
    bucket_ensure()
    _, raw = api_token_create(f"schema-{uuid.uuid4().hex[:8]}", ["admin"])
    return Ctx(settings=settings, token=raw)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "method", "status", "request_"), CASES)
def test_each_documented_status_is_produced_as_documented(ctx, path, method, status, request_):
    _produced_as_documented(ctx, path, method, status, request_)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "method", "status", "request_"), [c for c in CASES if c.values[0] in (W, B)])
def test_each_documented_write_status_is_produced_as_documented_by_the_lean_handler(
    ctx, path, method, status, request_
):
    ctx.write_client = LeanClient
    _produced_as_documented(ctx, path, method, status, request_)


def _produced_as_documented(ctx: Ctx, path: str, method: str, status: int, request_: Callable[[Ctx], Response]) -> None:
    response = request_(ctx)
    assert response.status_code == status, response.content[:300]
    documented = _deref(SCHEMA["paths"][path][method]["responses"][str(status)])
    for header, spec in documented.get("headers", {}).items():
        # A header documented as optional (`required: false`) is sent by some answers only.
        assert header in response or _deref(spec).get("required") is False, f"{header} missing"
    _body_valid(response, documented)


# --- the docs page ---------------------------------------------------------------------------


def test_the_docs_page_loads_only_assets_served_from_this_host():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html)
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    static = [a for a in assets if a.startswith("/static/")]
    assert static == [a for a in assets if not a.startswith("data:")]
    assert len(static) == 3, assets
    for asset in static:
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a static file"
    assert "<script>" not in html, "inline scripts will not pass a strict Content-Security-Policy"
    assert 'data-schema-url="/api/schema/"' in html
