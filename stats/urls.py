from django.urls import path
from django.views.generic import TemplateView

from stats import views

app_name = "stats"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("get/", views.blob_redirect, name="get"),
    # The dashboard's own script and style, as files (no inline code: CSP-ready), with no
    # static file server needed.
    path(
        "dashboard.js",
        TemplateView.as_view(template_name="stats/dashboard.js", content_type="text/javascript"),
        name="dashboard-js",
    ),
    path(
        "dashboard.css",
        TemplateView.as_view(template_name="stats/dashboard.css", content_type="text/css"),
        name="dashboard-css",
    ),
]
