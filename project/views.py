"""Operational endpoints: liveness, readiness, status, Prometheus metrics."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import generate_latest

from project.health import readiness, status_components
from project.http import api_view, json_response, methods
from project.metrics import registry
from project.operators import operator_required


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
