"""The front page, and operational endpoints: liveness, readiness, status, Prometheus metrics."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import generate_latest

from project.health import readiness, status_components
from project.http import api_view, json_response, methods
from project.metrics import registry
from project.operators import operator_required


def front_links() -> list[dict[str, str]]:
    return [
        {
            "rel": "dashboard",
            "title": "Dashboard",
            "href": reverse("stats:dashboard"),
            "what": "the published stats, drawn",
        },
        {"rel": "api_docs", "title": "API docs", "href": reverse("api-docs"), "what": "every endpoint, browsable"},
        {
            "rel": "schema",
            "title": "OpenAPI schema",
            "href": reverse("api-schema"),
            "what": "the API described in OpenAPI 3.1",
        },
        {
            "rel": "admin",
            "title": "Admin",
            "href": reverse("admin:index"),
            "what": "jobs, API tokens and schedules (staff)",
        },
    ]


@api_view
@methods("GET", "HEAD")
def front(request: HttpRequest) -> HttpResponse:
    """Where a newcomer lands: links to the dashboard, the API docs, the schema and the admin, as a
    small page, or as JSON to a client that prefers it (Accept: application/json)."""
    links = front_links()
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        response = json_response(
            # No version here: what runs is for operators (/metrics), not for anonymous visitors.
            {"service": "messy", "links": {link["rel"]: link["href"] for link in links}}
        )
    else:
        response = render(request, "home.html", {"links": links})
    patch_vary_headers(response, ["Accept"])
    return response


@api_view
@methods("GET", "HEAD")
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving. Touches nothing else, so a load balancer's probe is cheap."""
    return json_response({"status": "ok"})


@api_view
@methods("GET", "HEAD")
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to accept writes: the staging Redis answers and takes a write (project.health).
    Nothing else, so an outage the write path survives never takes the web tier out of rotation."""
    checks = readiness()
    if all(value == "ok" for value in checks.values()):
        return json_response({"status": "ready", "checks": checks})
    return json_response(
        {"status": "not_ready", "checks": checks},
        status=503,
        headers={"Retry-After": str(settings.MESSY_RETRY_AFTER_SECONDS)},
    )


@api_view
@methods("GET", "HEAD")
@operator_required
def status(request: HttpRequest) -> HttpResponse:
    """Every component for operators and alerts; always 200, "degraded" says whether all is well.
    Probed at most every MESSY_STATUS_CACHE_SECONDS, concurrently, within about a second."""
    return json_response(status_components.report(), headers={"Cache-Control": "no-store"})


@api_view
@operator_required
def metrics(request: HttpRequest) -> HttpResponse:
    """What the apps registered in project.metrics (in Prometheus' text format)."""
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")


@csrf_exempt  # it changes nothing, and answers for every method the guarded request uses
def staff_check(request: HttpRequest) -> HttpResponse:
    """The front door's auth_request for staff-only tools behind it (Flower at /flower/): 204
    for an active staff session (the admin login), 401 without a login (the front door then
    redirects to the admin login), 403 for a user who is not staff."""
    user = request.user
    if not user.is_authenticated:
        status = 401
    elif user.is_active and user.is_staff:
        status = 204
    else:
        status = 403
    return HttpResponse(status=status, headers={"Cache-Control": "no-store"})
