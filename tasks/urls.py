from django.urls import path

from tasks import views

urlpatterns = [
    path("import/", views.import_create, name="job-import"),
    path("erase/", views.erase, name="job-erase"),
    path("jobs/", views.jobs_list, name="job-list"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/report/", views.job_report, name="job-report"),
    path("<uuid:job_id>/", views.job_page, name="job-page"),
]
