"""Logs: JSON lines (or text) with the ids of the request, task and job they belong to, and no
message content or username, even when PostgreSQL quotes a refused row."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client

from messages import services, staging
from project.celery import app
from project.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    log_bound,
    log_bound_args,
    log_context,
    request_id_middleware,
)

REFUSED_ROW = 'boom\nDETAIL:  Failing row contains (0192, "secret-user", "secret text").'


class Captured:
    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(ContextFilter())
        self.handler.setFormatter(formatter)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every line the root logger writes, through the JSON formatter of settings.LOGGING."""
    capture = Captured(JsonFormatter("%(levelname)s %(name)s %(process)d %(message)s", timestamp="time"))
    root = logging.getLogger()
    root.addHandler(capture.handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield capture
    root.setLevel(level)
    root.removeHandler(capture.handler)


def test_a_json_line_carries_the_bound_context_and_extra_fields(captured):
    with log_bound(request_id="r-1", job_id="j-1"):
        logging.getLogger("messy.test").info("hello %s", "world", extra={"batch_size": 3})
    logging.getLogger("messy.test").info("after")

    first, second = captured.lines()
    assert next(iter(first)) == "time"
    assert first["level"] == "INFO"
    assert first["logger"] == "messy.test"
    assert first["message"] == "hello world"
    assert (first["request_id"], first["job_id"], first["batch_size"]) == ("r-1", "j-1", 3)
    assert "request_id" not in second


def test_the_text_format_ends_the_line_with_the_context():
    capture = Captured(TextFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("messy.test.text")
    logger.addHandler(capture.handler)
    try:
        with log_bound(task_id="t-1"):
            logger.warning("careful")
    finally:
        logger.removeHandler(capture.handler)
    assert capture.text == "WARNING careful task_id=t-1\n"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_postgresql_details_are_withheld_from_messages_and_tracebacks(formatter):
    capture = Captured(formatter)
    logger = logging.getLogger("messy.test.details")
    logger.addHandler(capture.handler)
    try:
        try:
            raise ValueError(REFUSED_ROW)
        except ValueError as exc:
            logger.exception("failed: %s", exc)
    finally:
        logger.removeHandler(capture.handler)
    assert "secret" not in capture.text
    assert "DETAIL: (withheld" in capture.text


def test_the_http_request_object_is_never_written(captured):
    # django.request passes the request as `extra`; its repr holds the query string, where a
    # GET write carries its message.
    request = HttpRequest()
    request.path = "/message/write/"
    request.META["QUERY_STRING"] = "message=secret"
    logging.getLogger("django.request").warning("Bad Request: %s", request.path, extra={"request": request})
    assert "secret" not in captured.text
    assert captured.lines()[0]["message"] == "Bad Request: /message/write/"


# --- request ids ---------------------------------------------------------------------------------


def test_a_sane_request_id_is_echoed():
    response = Client().get("/healthz", headers={"X-Request-ID": "front-abc-123"})
    assert response["X-Request-ID"] == "front-abc-123"


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "two words", "line\nbreak", "caf\u00e9"])
def test_a_missing_or_insane_request_id_is_replaced_by_a_minted_one(sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = Client().get("/healthz", headers=headers)
    minted = response["X-Request-ID"]
    assert minted != sent
    assert len(minted) == 32
    int(minted, 16)


def test_the_request_id_is_in_the_log_context_during_the_request_only():
    seen: dict[str, str] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen.update(log_context())
        return HttpResponse()

    request = HttpRequest()
    request.META["HTTP_X_REQUEST_ID"] = "abc"
    request_id_middleware(view)(request)
    assert seen == {"request_id": "abc"}
    assert "request_id" not in log_context()


# --- tasks and jobs ------------------------------------------------------------------------------


@app.task(name="tests.log_context_probe")
def log_context_probe() -> dict:
    return dict(log_context())


def test_a_task_runs_with_its_id_and_name_in_the_context():
    result = log_context_probe.apply(task_id="task-123")
    assert result.get() == {"task_id": "task-123", "task_name": "tests.log_context_probe"}
    assert "task_id" not in log_context()


def test_job_run_binds_the_job_id():
    @log_bound_args("job_id")
    def run(job_id: str, on_progress: object = None) -> dict:
        return dict(log_context())

    assert run("j-42") == {"job_id": "j-42"}
    assert run(job_id="j-43") == {"job_id": "j-43"}
    assert log_context() == {}

    from tasks import services as job_services

    assert job_services.job_run.__wrapped__  # type: ignore[attr-defined]


# --- the drain -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_is_logged_by_sqlstate_and_entry_ids_only(captured):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE message ADD CONSTRAINT test_refusal CHECK (username <> 'secret-user')")
    try:
        for username in ("ada", "secret-user"):
            body = {"username": username, "city": "London", "state": "LDN", "message": "secret text"}
            response = Client().post("/message/write/", data=json.dumps(body), content_type="application/json")
            assert response.status_code == 202
        services.messages_drain(staging.shards()[0], slot=0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE message DROP CONSTRAINT IF EXISTS test_refusal")

    assert "secret" not in captured.text
    refused = [line for line in captured.lines() if line["message"].startswith("batch refused")]
    assert len(refused) == 1
    assert "SQLSTATE 23514" in refused[0]["message"]
    assert refused[0]["batch_size"] == 2
    assert refused[0]["batch_first_entry"] < refused[0]["batch_last_entry"]
    assert refused[0]["batch_first_message"] < refused[0]["batch_last_message"]  # ids, never content
