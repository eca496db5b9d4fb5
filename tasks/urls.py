"""The jobs API (JSON, errors in the shared shape) and the progress page.

# Documented in docs/jobs.md ("The API"): each route and the token scope it takes.
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
