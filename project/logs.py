"""Log lines and their context: the ids that tie a line to a request, a Celery task, a job or a
drain batch, in every web, worker and beat process.

A contextvar holds the context (bound per request, per task, or by log_bound()); ContextFilter
copies it onto each record; the formatters write JSON lines or text (LOG_FORMAT). Never logged:
message content or usernames, so PostgreSQL's DETAIL lines are withheld.
Documented in docs/operations.md ("Notes from the code").
"""

import functools
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

# Each value is a new dict, never changed once set (binding builds another), so a plain dict
# is safe to share between a context and its copies; cheaper than a read-only proxy.
_context: ContextVar[Mapping[str, Any]] = ContextVar("messy_log_context", default=MappingProxyType({}))

# Attributes never written as fields: a LogRecord's own, those the formatters add, and the
# HttpRequest that django.request passes as `extra` (its repr carries the query string, where a
# GET write has its message). Anything else on a record is context or a call's `extra`.
_NOT_FIELDS = frozenset(RESERVED_ATTRS) | {"message", "asctime", "request"}


def log_context() -> Mapping[str, Any]:
    """The values bound in this thread (or task) now."""
    return _context.get()


def log_bind(**values: Any) -> Token[Mapping[str, Any]]:
    """Add values to the context; hand the token to log_unbind() to take them off again."""
    return _context.set({**_context.get(), **values})


def log_unbind(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def log_bound(**values: Any) -> Iterator[None]:
    """The values are in the context of every line logged inside the block."""
    token = log_bind(**values)
    try:
        yield
    finally:
        log_unbind(token)


P = ParamSpec("P")
R = TypeVar("R")


def log_bound_args(*names: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the named arguments of each call (as text) are in the context during the call
    (`@log_bound_args("job_id")`). For calls that are not on a hot path: it binds the arguments
    by the function's signature each time."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            arguments = signature.bind_partial(*args, **kwargs).arguments
            with log_bound(**{name: str(arguments[name]) for name in names if name in arguments}):
                return func(*args, **kwargs)

        return wrapper

    return decorate


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record as attributes (a call's own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        if context:
            attrs = record.__dict__
            for name, value in context.items():
                attrs.setdefault(name, value)
        return True


# PostgreSQL's DETAIL line quotes the values of a refused row ("Failing row contains (...)",
# "Key (id)=(...) already exists"): a message's content and its username.
_PG_DETAIL = re.compile(r"^DETAIL:.*$", re.MULTILINE)
_PG_DETAIL_WITHHELD = "DETAIL: (withheld from logs: it may quote a row's values)"


def _withhold_details(text: str) -> str:
    return _PG_DETAIL.sub(_PG_DETAIL_WITHHELD, text) if "DETAIL:" in text else text


class JsonFormatter(OrjsonFormatter):
    """One JSON object a line: time, level, logger, process, message, then the context and any
    `extra` as fields of their own (request_id, task_id, job_id, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("reserved_attrs", sorted(_NOT_FIELDS - {"message", "asctime"}))
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for field in ("message", "exc_info", "stack_info"):
            value = log_data.get(field)
            if isinstance(value, str):
                log_data[field] = _withhold_details(value)
        # The time first, as a reader scans a line.
        return {"time": log_data.pop("time", None), **log_data}


class TextFormatter(logging.Formatter):
    """The classic line for a terminal, with the context and `extra` as key=value at the end."""

    def format(self, record: logging.LogRecord) -> str:
        line = _withhold_details(super().format(record))
        fields = [f"{name}={value}" for name, value in record.__dict__.items() if name not in _NOT_FIELDS]
        if not fields:
            return line
        head, newline, tail = line.partition("\n")
        return f"{head} {' '.join(fields)}{newline}{tail}"


# --- request ids -------------------------------------------------------------------------------

# What a request id from outside may be: visible ASCII, short enough for a log field. Anything
# else (a client's garbage or an attempt to forge log lines) is replaced by a fresh id.
REQUEST_ID_MAX_CHARS = 128
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,%d}" % REQUEST_ID_MAX_CHARS)  # noqa: UP031 (a regex, not a format)


def request_id_mint() -> str:
    """32 hex digits, like nginx's $request_id (the front door mints them for the usual case)."""
    return os.urandom(16).hex()


def request_id_from(meta: Mapping[str, Any]) -> str:
    """The request's id: the X-Request-ID it came with (`meta`: the WSGI environ, a Django
    request's META) when that is sane, else a fresh one. The one rule for Django's requests
    (request_id_middleware) and the lean handlers' (project.lean)."""
    request_id = meta.get("HTTP_X_REQUEST_ID")
    if not request_id or not _REQUEST_ID.fullmatch(request_id):
        return request_id_mint()
    return request_id


def request_id_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Takes the X-Request-ID the front door sends (or a client's, when it is sane) or mints one,
    binds it to the log context for the request, and echoes it on the response.

    On the write path's budget: a dict lookup, one regex match, a contextvar set and reset and
    a response header (its cost: docs/benchmarks.md)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.META)
        token = log_bind(request_id=request_id)
        try:
            response = get_response(request)
        finally:
            log_unbind(token)
        response["X-Request-ID"] = request_id
        return response

    return middleware
