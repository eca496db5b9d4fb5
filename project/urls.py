from django.contrib import admin
from django.urls import include, path

from project import api_docs, views
from project.ratelimit import admin_login_limited

handler404 = "project.http.handler404"
handler500 = "project.http.handler500"

urlpatterns = [
    path("", views.front, name="front"),
    path("message/", include("messages.urls")),
    path("stat/", include("stats.urls")),
    path("tasks/", include("tasks.urls")),
    path("admin/login/", admin_login_limited(admin.site.login)),
    # Not an admin page: the front door asks it whether a request may reach Flower.
    path("admin/staff-check/", views.staff_check, name="staff-check"),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("status", views.status, name="status"),
    path("metrics", views.metrics, name="metrics"),
    path("api/schema/", api_docs.api_schema, name="api-schema"),
    path("api/docs/", api_docs.api_docs, name="api-docs"),
]
