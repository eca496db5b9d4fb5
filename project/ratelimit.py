"""Limits on failed authentication: bearer tokens of the jobs API, write API keys and the admin
login. A fixed window in Redis shared by every web host, then 429 with Retry-After. Counts are
kept per client network (an IPv6 /64) and account, so one client's failures never refuse another.
While blocked, every attempt from there is refused, right or wrong; a Redis error never locks
anyone out. Documented in docs/front-door.md.
"""

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from project.http import client_ip, client_network
from project.redis import key, redis_client

logger = logging.getLogger(__name__)


def _failures_key(scope: str, meta: Mapping[str, Any], account: str = "") -> str:
    who = client_network(client_ip(meta))
    if account:
        # Hashed: a username typed by anyone is no Redis key name, and has no bound on its length.
        who += ":" + hashlib.sha256(account.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return key("authfail", scope, who)


def auth_failures_wait(scope: str, request: HttpRequest, account: str = "") -> int:
    """Seconds this client must wait before trying `scope` (for `account`) again; 0 when it may
    try now."""
    name = _failures_key(scope, request.META, account)
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


def _failure_count(name: str) -> tuple[int, int]:
    """Count a failure under `name` (the window starts at its first): the count and the seconds
    left in the window; (0, 0) when Redis cannot say."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, settings.MESSY_AUTH_FAILURES_WINDOW_SECONDS, nx=True)
        pipe.ttl(name)
        count, _, ttl = pipe.execute()
    except redis.RedisError:
        logger.warning("could not count a failed authentication", exc_info=True)
        return 0, 0
    return int(count), int(ttl)


def auth_failure_note(scope: str, request: HttpRequest, account: str = "") -> None:
    """Count a failed attempt of this client at `scope` (for `account`)."""
    _failure_count(_failures_key(scope, request.META, account))


# Write API keys are checked on the write path, which must not pay a Redis read per write: a
# process remembers the networks it saw go over the limit (until their window ends) and refuses
# them without asking Redis. Each web process learns it at the first failure it sees past the
# limit, so a guesser gets at most one more guess per web process and window.
_write_key_blocked: dict[str, float] = {}
_WRITE_KEY_BLOCKED_MAX = 10_000


def write_key_failures_wait(meta: Mapping[str, Any]) -> int:
    """Seconds this client must wait before its next write with a key; 0 when it may write now.
    No I/O: this process's memory of write_key_failure_note."""
    if not _write_key_blocked:
        return 0
    name = _failures_key("writekey", meta)
    until = _write_key_blocked.get(name)
    if until is None:
        return 0
    left = until - time.monotonic()
    if left <= 0:
        del _write_key_blocked[name]
        return 0
    return math.ceil(left)


def write_key_failure_note(meta: Mapping[str, Any]) -> None:
    """Count a wrong write API key from this client, and block it here once over the limit."""
    name = _failures_key("writekey", meta)
    count, ttl = _failure_count(name)
    if count >= settings.MESSY_AUTH_FAILURES_MAX and ttl > 0:
        if len(_write_key_blocked) >= _WRITE_KEY_BLOCKED_MAX:
            _write_key_blocked.clear()  # bounded memory; Redis still holds every count
        _write_key_blocked[name] = time.monotonic() + ttl


def admin_login_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin's login view, limited per client network and username: a POST that does not log
    in (the form comes back) is a failure; over the limit, a plain 429 page with Retry-After."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        account = str(request.POST.get("username", ""))
        wait = auth_failures_wait("admin", request, account)
        if wait:
            return HttpResponse(
                f"Too many failed logins for this account from your address. Try again in {wait} seconds.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(wait)},
            )
        response = view(request, *args, **kwargs)
        if response.status_code == 200 and not request.user.is_authenticated:
            auth_failure_note("admin", request, account)
        return response

    return wrapper
