from django.conf import settings
from django.urls import path

from messages import views

urlpatterns = [
    path("write/", views.message_write, name="message-write"),
    path("batch/", views.message_batch, name="message-batch"),
    path("<uuid:message_id>/", views.message_status, name="message-status"),
]

if settings.MESSY_BENCH_ENDPOINTS:
    urlpatterns.append(path("noop/", views.noop, name="message-noop"))
