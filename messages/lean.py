"""The write endpoints' lean handlers (project.lean): the same answers as the Django views in
messages.views, from the same functions, without Django's request machinery.

Registered for the paths messages.urls routes to message_write and message_batch, with and
without the trailing slash (tests/messages/test_lean.py checks that they are those).
"""

from messages import payloads, views
from project.http import Answer
from project.lean import LeanHandler, LeanRequest


def message_write(request: LeanRequest) -> Answer | None:
    if payloads.media_type(request.META) == payloads.MULTIPART_TYPE:
        return None  # a browser's form: Django's multipart parser reads it, in the Django view
    return views.message_write_answer(request.method, request.META, request.read_body)


def message_batch(request: LeanRequest) -> Answer | None:
    return views.message_batch_answer(request.method, request.META, request.read_body)


HANDLERS: dict[str, LeanHandler] = {
    "/message/write/": message_write,
    "/message/write": message_write,
    "/message/batch/": message_batch,
    "/message/batch": message_batch,
}
