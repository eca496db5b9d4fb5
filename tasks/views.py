"""The jobs API and the progress page. Thin: check, call one service or selector, answer."""

import uuid
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.urls import reverse

from messages.payloads import write_data
from messages.validation import message_validate
from project.http import ApiError, api_view, json_response, methods
from project.storage import presigned_get_url
from tasks import selectors, services
from tasks.auth import credentials_required, jobs_owner, page_token, scope_granted, scope_required
from tasks.erasing import erasure_job_create
from tasks.importing import UploadTooLarge, import_job_create
from tasks.kinds import job_kinds
from tasks.models import ApiToken, Job
from tasks.records import FORMATS

_FORMAT_BY_TYPE = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
}
# Room for multipart boundaries and headers around a file of the largest allowed size.
_MULTIPART_OVERHEAD = 64 * 1024


def _job_or_404(request: HttpRequest, job_id: uuid.UUID) -> Job:
    """The job, if this request may see it: a token without `admin` sees only its own, and
    another's is 404 as well, so as not to tell that it exists."""
    job = selectors.job_get(job_id, owner=jobs_owner(request))
    if job is None:
        raise ApiError(404, "job_not_found", "No job with that id.")
    return job


def _created(job: Job) -> HttpResponse:
    return json_response(
        selectors.job_json(job, page_token(job.pk)),
        status=202,
        headers={"Location": reverse("job-detail", args=[job.pk])},
    )


def _upload(request: HttpRequest) -> tuple[IO[bytes], str, str]:
    """The uploaded file, its name and its declared format: a multipart field "file", or the
    raw body typed by Content-Type. ?format= (or a "format" form field) overrides."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad_content_length", "Content-Length is not a number.") from None
    if declared > settings.MESSY_IMPORT_MAX_BYTES + _MULTIPART_OVERHEAD:
        raise ApiError(413, "file_too_large", f"Import files are limited to {settings.MESSY_IMPORT_MAX_BYTES} bytes.")
    media_type = (request.content_type or "").lower()
    if media_type == "multipart/form-data":
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(
                400, "file_required", 'Send the file in the multipart field "file".', fields={"file": ["Required."]}
            )
        stream: Any = upload
        name, file_format = upload.name or "upload", request.POST.get("format", "")
    else:
        stream, name, file_format = request, request.GET.get("name", "upload"), _FORMAT_BY_TYPE.get(media_type, "")
    file_format = request.GET.get("format", file_format)
    if file_format and file_format not in FORMATS:
        raise ApiError(
            400,
            "invalid_format",
            f"format must be one of {', '.join(FORMATS)}.",
            fields={"format": ["Unknown format."]},
        )
    if len(name) > 255 or not name.isprintable():
        # The name is kept in the job's JSON parameters, which PostgreSQL refuses with a NUL.
        raise ApiError(
            400,
            "invalid_name",
            "The file name must be at most 255 printable characters.",
            fields={"name": ["Must be at most 255 printable characters."]},
        )
    return stream, name, file_format


@api_view
@methods("POST")
@credentials_required(ApiToken.Scope.IMPORT)
def import_create(request: HttpRequest) -> HttpResponse:
    stream, name, file_format = _upload(request)
    try:
        job = import_job_create(
            stream,
            name=name,
            file_format=file_format,
            created_by=request.user,
            token=request.api_token,  # type: ignore[attr-defined]
        )
    except UploadTooLarge:
        raise ApiError(
            413, "file_too_large", f"Import files are limited to {settings.MESSY_IMPORT_MAX_BYTES} bytes."
        ) from None
    return _created(job)


_import_allowed = credentials_required(ApiToken.Scope.IMPORT)(lambda request: HttpResponse(status=204))


def import_check(request: HttpRequest) -> HttpResponse:
    """The front door's check of an upload's credentials before it reads the body (nginx's
    auth_request for POST /tasks/import/, deploy/nginx.conf.template): 204 when import_create
    would accept them, else 401 or 403 with the reason in X-Messy-Error (auth_request passes on
    headers, not bodies; over the failure limit: 403, too_many_failures and Retry-After)."""
    if request.headers.get("X-Original-Method", "POST") != "POST":
        return HttpResponse(status=204)  # import_create answers the method itself
    try:
        return _import_allowed(request)
    except ApiError as refused:
        status = 401 if refused.status == 401 else 403
        return HttpResponse(status=status, headers={**(refused.headers or {}), "X-Messy-Error": refused.error})


def _erase_data(request: HttpRequest) -> dict[str, Any]:
    """The body of POST /tasks/erase/. A form or multipart body is read through request.POST:
    a staff session's CSRF check may already have parsed it from the stream, after which the
    raw body can no longer be read. JSON is read as the write endpoint reads it."""
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            return request.POST.dict()
        except MultiPartParserError:
            raise ApiError(400, "malformed_form", "The form data could not be parsed.") from None
    return write_data(request.method, request.META, lambda: request.body, lambda: request.POST.dict())


@api_view
@methods("GET", "POST")
@credentials_required(ApiToken.Scope.ERASE)
def erase(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return json_response({"erasures_performed": selectors.erasure_count()})
    data = _erase_data(request)
    # The username rules of the write endpoint, with placeholders for the other fields.
    _, errors = message_validate({"city": "-", "state": "-", "message": "-", **data})
    if "username" in errors:
        raise ApiError(400, "invalid_username", "Name the user to erase.", fields={"username": errors["username"]})
    job = erasure_job_create(
        data["username"].strip(),
        created_by=request.user,
        token=request.api_token,  # type: ignore[attr-defined]
    )
    return _created(job)


@api_view
@methods("GET")
@credentials_required(ApiToken.Scope.READ)
def jobs_list(request: HttpRequest) -> HttpResponse:
    kind, status = request.GET.get("kind", ""), request.GET.get("status", "")
    if kind and kind not in Job.Kind.values:
        raise ApiError(
            400, "invalid_filter", "Unknown kind.", fields={"kind": [f"One of {', '.join(Job.Kind.values)}."]}
        )
    if status and status not in Job.Status.values:
        raise ApiError(
            400, "invalid_filter", "Unknown status.", fields={"status": [f"One of {', '.join(Job.Status.values)}."]}
        )
    jobs = selectors.jobs_list(kind=kind, status=status, owner=jobs_owner(request))
    memo: dict[str, Any] = {}
    return json_response({"jobs": [selectors.job_json(job, memo=memo) for job in jobs]})


@api_view
@methods("GET")
@credentials_required(ApiToken.Scope.READ, page_link=True)
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    return json_response(selectors.job_json(_job_or_404(request, job_id)), headers={"Cache-Control": "no-store"})


@api_view
@methods("POST")
@credentials_required(None)
def job_cancel(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _job_or_404(request, job_id)
    scope_required(request, job_kinds.get(job.kind).scope)
    if not services.job_cancel(job):
        raise ApiError(409, "job_finished", f"The job has already {job.status}.")
    job.refresh_from_db()
    return json_response(selectors.job_json(job), status=202)


@api_view
@methods("GET")
@credentials_required(ApiToken.Scope.READ, page_link=True)
def job_report(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _job_or_404(request, job_id)
    if not job.result_key:
        raise ApiError(404, "no_report", "This job has no report (yet).")
    return HttpResponseRedirect(presigned_get_url(job.result_key, settings.MESSY_JOB_REPORT_URL_EXPIRY))


@api_view
@methods("GET")
@credentials_required(ApiToken.Scope.READ, page_link=True)
def job_page(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _job_or_404(request, job_id)
    # Cancelling takes what job_cancel takes (the kind's scope, or staff), never the link alone.
    can_cancel = scope_granted(request, job_kinds.get(job.kind).scope)
    context = {"job": job, "link_token": request.GET.get("t", ""), "can_cancel": can_cancel}
    response = render(request, "tasks/job.html", context)
    # The link's token must not travel on to S3 (the report download) in a Referer header.
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response
