from django.contrib import admin
from django.urls import include, path

from project import views

handler404 = "project.http.handler404"
handler500 = "project.http.handler500"

urlpatterns = [
    path("message/", include("messages.urls")),
    path("stat/", include("stats.urls")),
    path("tasks/", include("tasks.urls")),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
]
