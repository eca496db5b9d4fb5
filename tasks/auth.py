"""Who may use the jobs API, written once as a decorator; and the API tokens themselves.

An API token (Bearer, looked up by its digest), a staff session (with CSRF for unsafe methods),
or, for reading one job, a signed link. A token does what its scopes allow; the scope a kind of
job takes is the kind's own (JobKind.scope).

A staff session does what its Django permissions allow (tasks.scope_<scope>, given to the
user or a group; a superuser has them all).
# Documented in docs/jobs.md ("Who may use the API").
"""

import functools
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from project.http import ApiError, bearer_token
from project.ratelimit import auth_failure_note, auth_failures_wait
from tasks.models import ApiToken

TOKEN_PREFIX = "messy_"  # noqa: S105 (a marker that tells tokens apart in logs and leaks scanners)
_PAGE_SALT = "tasks.job-page"


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_create(name: str, scopes: Iterable[str], expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token with these scopes (at least one, named explicitly), valid until expires_at
    (None: until revoked). The raw value is returned once and never stored."""
    wanted = set(scopes)
    if not wanted or not wanted <= set(ApiToken.Scope.values):
        raise ValueError(f"Name one or more scopes of {', '.join(ApiToken.Scope.values)}.")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        name=name,
        prefix=raw[: len(TOKEN_PREFIX) + 4],
        key_hash=token_hash(raw),
        scopes=[scope for scope in ApiToken.Scope.values if scope in wanted],
        expires_at=expires_at,
    )
    return token, raw


def api_token_revoke(name: str) -> bool:
    return ApiToken.objects.filter(name=name, is_active=True).update(is_active=False) == 1


def api_token_used(token: ApiToken) -> None:
    """Note when a token was last used, at most once a minute (a read path should not write)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def _insufficient_scope(scope: str, *, session: bool = False) -> ApiError:
    lacks = f"Your account lacks the {scope} scope (permission tasks.scope_{scope})."
    return ApiError(
        403,
        "insufficient_scope",
        lacks if session else f"This token lacks the {scope} scope.",
        headers={"WWW-Authenticate": f'Bearer realm="messy", error="insufficient_scope", scope="{scope}"'},
    )


def token_allows(token: ApiToken, scope: str | None) -> None:
    """Raise the 403 for an expired token, or one without `scope` (None: any scope will do)."""
    if token.expired(timezone.now()):
        raise ApiError(
            403,
            "token_expired",
            "That API token has expired.",
            headers={"WWW-Authenticate": 'Bearer realm="messy", error="invalid_token", error_description="expired"'},
        )
    if scope is not None and not token.has_scope(scope):
        raise _insufficient_scope(scope)


def staff_has_scope(user: Any, scope: str) -> bool:
    """A staff session's scope is a permission (tasks.scope_<scope>); `admin` includes the others.
    Being staff alone grants none: a dashboard viewer must not be able to erase users."""
    if not (user.is_active and user.is_staff):
        return False
    return bool(user.has_perm(f"tasks.scope_{scope}") or user.has_perm(f"tasks.scope_{ApiToken.Scope.ADMIN}"))


def scope_granted(request: HttpRequest, scope: str) -> bool:
    """Whether the request's credential has `scope`: a token's scopes, or a staff session's
    permissions. A page link has none."""
    token: ApiToken | None = request.api_token  # type: ignore[attr-defined]
    return token.has_scope(scope) if token is not None else staff_has_scope(request.user, scope)


def scope_required(request: HttpRequest, scope: str) -> None:
    """For a view whose scope depends on what it acts on (cancelling: the job's kind)."""
    if not scope_granted(request, scope):
        raise _insufficient_scope(scope, session=request.api_token is None)  # type: ignore[attr-defined]


def jobs_owner(request: HttpRequest) -> ApiToken | None:
    """The token whose own jobs are the only ones this request may see, or None for every job:
    a staff session, an `admin` token, or a page link (already checked against its one job)."""
    token: ApiToken | None = request.api_token  # type: ignore[attr-defined]
    return None if token is None or token.has_scope(ApiToken.Scope.ADMIN) else token


def page_token(job_id: uuid.UUID | str) -> str:
    return signing.TimestampSigner(salt=_PAGE_SALT).sign(str(job_id))


def page_token_valid(token: str, job_id: uuid.UUID | str) -> bool:
    try:
        signed = signing.TimestampSigner(salt=_PAGE_SALT).unsign(token, max_age=settings.MESSY_JOB_PAGE_TOKEN_MAX_AGE)
    except signing.BadSignature:
        return False
    return signed == str(job_id)


def _bearer(request: HttpRequest) -> str | None:
    token = bearer_token(request.META)
    if token == "":
        raise ApiError(401, "authentication_required", "Use Authorization: Bearer <token>.", headers=_CHALLENGE)
    return token


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="messy"'}


def _csrf_failed(request: HttpRequest) -> bool:
    check = CsrfViewMiddleware(lambda _: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _: HttpResponse(), (), {}) is not None


def credentials_required(
    scope: str | None, *, page_link: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Let the view run only for a valid token with `scope` (None: the view checks the scope
    itself, with scope_required) or a staff session (or, with page_link, a signed link to the
    job named by the view's job_id). Sets request.api_token (None for a session or a link)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request.api_token = None  # type: ignore[attr-defined]
            raw = _bearer(request)
            if raw is not None:
                # Failed tokens are limited per client address (project.ratelimit).
                wait = auth_failures_wait("bearer", request)
                if wait:
                    raise ApiError(
                        429,
                        "too_many_failures",
                        "Too many invalid tokens from your address; retry later.",
                        headers={"Retry-After": str(wait)},
                    )
                token = ApiToken.objects.filter(key_hash=token_hash(raw), is_active=True).first()
                if token is None:
                    auth_failure_note("bearer", request)
                    raise ApiError(403, "invalid_token", "That API token is not valid.")
                api_token_used(token)
                request.api_token = token  # type: ignore[attr-defined]
                token_allows(token, scope)
            elif request.user.is_authenticated:
                if not request.user.is_staff:
                    raise ApiError(403, "staff_required", "Only staff may use the jobs API.")
                if _csrf_failed(request):
                    raise ApiError(403, "csrf_failed", "Send the CSRF token with a session-authenticated request.")
                if scope is not None:
                    scope_required(request, scope)
            elif page_link and "t" in request.GET:
                if not page_token_valid(request.GET["t"], kwargs["job_id"]):
                    raise ApiError(403, "invalid_link", "This link is not valid for this job, or it expired.")
            else:
                raise ApiError(
                    401, "authentication_required", "Send an API token or log in as staff.", headers=_CHALLENGE
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
