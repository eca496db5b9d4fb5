"""Limits on failed authentication per client address (bearer tokens of the jobs API, the admin
login): a fixed window in Redis shared by every web host, then 429 with Retry-After.

While blocked, every attempt is refused, right or wrong; a Redis error never locks anyone out.
Documented in docs/operations.md ("Notes from the code").
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from project.http import client_ip
from project.redis import key, redis_client

logger = logging.getLogger(__name__)


def _failures_key(scope: str, request: HttpRequest) -> str:
    return key("authfail", scope, client_ip(request.META))


def auth_failures_wait(scope: str, request: HttpRequest) -> int:
    """Seconds this client must wait before trying `scope` again; 0 when it may try now."""
    name = _failures_key(scope, request)
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.get(name)
        pipe.ttl(name)
        count, ttl = pipe.execute()
    except redis.RedisError:
        logger.warning("could not read the failed-authentication count; not limiting", exc_info=True)
        return 0
    if count is None or int(count) < settings.MESSY_AUTH_FAILURES_MAX:
        return 0
    return max(1, int(ttl))


def auth_failure_note(scope: str, request: HttpRequest) -> None:
    """Count a failed attempt of this client at `scope` (the window starts at its first)."""
    name = _failures_key(scope, request)
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, settings.MESSY_AUTH_FAILURES_WINDOW_SECONDS, nx=True)
        pipe.execute()
    except redis.RedisError:
        logger.warning("could not count a failed authentication", exc_info=True)


def admin_login_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin's login view, limited per client address: a POST that does not log in (the
    form comes back) is a failure; over the limit, a plain 429 page with Retry-After."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        wait = auth_failures_wait("admin", request)
        if wait:
            return HttpResponse(
                f"Too many failed logins from your address. Try again in {wait} seconds.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(wait)},
            )
        response = view(request, *args, **kwargs)
        if response.status_code == 200 and not request.user.is_authenticated:
            auth_failure_note("admin", request)
        return response

    return wrapper
