"""The write endpoints' lean handlers (project.lean): the same answers as the Django views in
messages.views, from the same functions, without Django's request machinery.

Registered by view: project.lean serves lean every route messages.urls gives those views.
"""

from collections.abc import Callable
from typing import Any

from messages import payloads, views
from project.http import Answer
from project.lean import LeanHandler, LeanRequest


def message_write(request: LeanRequest) -> Answer | None:
    if payloads.media_type(request.META) == payloads.MULTIPART_TYPE:
        return None  # a browser's form: Django's multipart parser reads it, in the Django view
    return views.message_write_answer(request.method, request.META, request.read_body)


def message_batch(request: LeanRequest) -> Answer | None:
    return views.message_batch_answer(request.method, request.META, request.read_body)


HANDLERS: dict[Callable[..., Any], LeanHandler] = {
    views.message_write: message_write,
    views.message_batch: message_batch,
}
