"""The stats endpoints: the redirect to the blob, and the dashboard that follows it.

Documented in docs/stats.md.
"""

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_safe
from redis.exceptions import RedisError

from project.http import ApiError, api_view, methods
from stats import selectors
from stats.access import stats_viewer_required
from stats.services import publish

logger = logging.getLogger(__name__)


@api_view
@methods("GET", "HEAD")
@stats_viewer_required()
def blob_redirect(request: HttpRequest) -> HttpResponse:
    """302 to a short-lived presigned URL of the latest blob. One Redis read and a local
    signature: no database query, no S3 call."""
    retry = {"Retry-After": str(settings.STATS_RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}
    try:
        published = selectors.stats_published()
    except RedisError:
        logger.warning("cannot tell whether stats are published: Redis unavailable", exc_info=True)
        raise ApiError(503, "stats_unavailable", "Statistics are unavailable for a moment.", headers=retry) from None
    if published is None:
        publish.stats_publish_request()
        raise ApiError(503, "stats_not_published", "No statistics published yet; the first is coming.", headers=retry)
    response = HttpResponseRedirect(selectors.stats_blob_url())
    # The URL expires soon: nobody may keep the redirect.
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@stats_viewer_required(page=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard page. Its script fetches the blob through /stat/get/ and draws it."""
    context = {"refresh_seconds": 60, "stale_after_seconds": settings.STATS_STALE_AFTER_SECONDS}
    return render(request, "stats/dashboard.html", context)
