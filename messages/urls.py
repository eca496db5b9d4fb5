from django.conf import settings
from django.urls import path

from messages import views

urlpatterns = [
    path("write/", views.message_write, name="message-write"),
    path("batch/", views.message_batch, name="message-batch"),
    # Clients that drop the trailing slash are answered too: a redirect would turn their POST
    # into a GET (curl -L, requests). Other paths: project.http.CommonMiddleware.
    path("write", views.message_write),
    path("batch", views.message_batch),
    path("<uuid:message_id>/", views.message_status, name="message-status"),
]

if settings.MESSY_BENCH_ENDPOINTS:
    urlpatterns += [
        path("noop/", views.noop, name="message-noop"),
        # The write endpoints through Django's handler (their own paths are served by the lean
        # one, messages.lean): make bench compares the two on the same server.
        path("django/write/", views.through_django(views.message_write), name="message-django-write"),
        path("django/batch/", views.through_django(views.message_batch), name="message-django-batch"),
    ]
