"""The jobs API (JSON, errors in the shared shape) and the progress page.

                                                                                 token scope
    POST /tasks/import/                 upload (multipart "file", or the raw body    import
                                        typed by Content-Type; ?format=, ?name=)
                                        -> 202 job
    POST /tasks/erase/                  {"username": ...} -> 202 job                 erase
    GET  /tasks/erase/                  {"erasures_performed": n}                    erase
    GET  /tasks/jobs/?kind=&status=     the newest 100 jobs                          read
    GET  /tasks/jobs/<id>/              one job: status, progress, error, result     read
    POST /tasks/jobs/<id>/cancel/       202; 409 when it has finished                the job's kind
    GET  /tasks/jobs/<id>/report/       302 to the import's error report in S3       read
    GET  /tasks/<id>/                   the progress page                            read

All need `Authorization: Bearer <token>` with the scope above (`admin` has them all), or a
staff session (see tasks.auth); without `admin`, a token sees only the jobs it created. The
job's read endpoints and its page also take the signed link (?t=) returned when the job was
created.
"""

from django.urls import path
from django.views.generic import TemplateView

from tasks import views

urlpatterns = [
    path("import/", views.import_create, name="job-import"),
    path("import/check/", views.import_check, name="job-import-check"),  # the front door's auth_request
    path("erase/", views.erase, name="job-erase"),
    path("jobs/", views.jobs_list, name="job-list"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/report/", views.job_report, name="job-report"),
    path("<uuid:job_id>/", views.job_page, name="job-page"),
    # The progress page's script and style, as files (no inline code: CSP-ready).
    path(
        "job.js", TemplateView.as_view(template_name="tasks/job.js", content_type="text/javascript"), name="job-page-js"
    ),
    path("job.css", TemplateView.as_view(template_name="tasks/job.css", content_type="text/css"), name="job-page-css"),
]
