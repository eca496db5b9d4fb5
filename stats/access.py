"""Who may read the statistics, written once as a decorator.

By default anyone may: the dashboard and /stat/get/ are public, as the blob holds only
aggregates (and the top usernames). With STATS_LOGIN_REQUIRED both need a staff session (the
admin's login), because the admin login is the only login page Messy has and it admits staff
only. /stat/get/ then answers 401 (no session) or 403 (not staff) in the shared JSON error
shape; the dashboard page sends the browser to the admin login and back.
"""

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from project.http import ApiError


def stats_viewer_required(
    *, page: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Let the view run when STATS_LOGIN_REQUIRED is off, or for a staff session. page=True:
    redirect to the admin login; otherwise raise ApiError (put it inside @api_view)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not settings.STATS_LOGIN_REQUIRED or (user.is_authenticated and user.is_staff):
                return view(request, *args, **kwargs)
            if page:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            if user.is_authenticated:
                raise ApiError(403, "staff_required", "Only staff may read the statistics.")
            raise ApiError(401, "authentication_required", "Log in as staff to read the statistics.")

        return wrapper

    return decorator
