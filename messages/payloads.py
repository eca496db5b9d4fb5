"""Reading message data out of HTTP requests: JSON, forms, query strings, NDJSON.

Every failure is an ApiError with a 4xx status: a malformed request never becomes a 500. Text
is decoded strictly as UTF-8 (PostgreSQL rejects what cannot be decoded). Readers take the WSGI
environ (`meta`) and `read_body`, called at most once after the size checks, so the Django views
and the lean handlers read requests the same way.
"""

import hashlib
import json
import json.scanner
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from django.conf import settings

from messages.validation import MessageInput
from project.conf import cached_settings
from project.http import ApiError

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"

# Reads the request's body (Django: lambda: request.body); called at most once.
BodyReader = Callable[[], bytes]


def media_type(meta: Mapping[str, Any]) -> str:
    return (meta.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type in JSON_TYPES or media_type.endswith("+json")


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"The body is larger than {max_bytes} bytes.")


def body_read(meta: Mapping[str, Any], read_body: BodyReader, max_bytes: int) -> bytes:
    """The request body, refusing with 413 anything over max_bytes before reading it.

    A body sent with `Content-Encoding: gzip` is inflated here, and max_bytes then bounds what
    it inflates to (its compressed size is bounded by the same figure first): incrementally,
    never more than max_bytes + 1 bytes, so a small bomb costs nothing. Another encoding is
    415; a body that is not valid gzip is 400."""
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad_content_length", "Content-Length is not a number.") from None
    if declared > max_bytes:
        raise _too_large(max_bytes)
    encoding = meta.get("HTTP_CONTENT_ENCODING")
    if not encoding or encoding.strip().lower() == "identity":
        return read_body()
    if encoding.strip().lower() not in GZIP_ENCODINGS:
        raise ApiError(415, "unsupported_content_encoding", "Send the body as it is, or with Content-Encoding: gzip.")
    return gunzip(read_body(), max_bytes)


GZIP_ENCODINGS = ("gzip", "x-gzip")


def gunzip(raw: bytes, max_bytes: int) -> bytes:
    """One gzip member inflated to at most max_bytes, and to at most MESSY_GZIP_MAX_RATIO times
    its compressed size (413 beyond either); 400 when it is not gzip, or when anything follows
    the member (a second member or garbage would otherwise be ignored and the request answered
    as if it held only the first). The ratio bounds what a small body can cost: every byte
    inflated is then parsed."""
    ratio_limit = cached_settings.MESSY_GZIP_MAX_RATIO * len(raw)
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, min(max_bytes, ratio_limit) + 1)
        complete = inflater.eof
    except zlib.error:
        raise ApiError(400, "malformed_gzip", "The body is not valid gzip.") from None
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    if len(body) > ratio_limit:
        raise ApiError(
            413,
            "compression_ratio_too_high",
            f"The body inflates to more than {cached_settings.MESSY_GZIP_MAX_RATIO} times its compressed size.",
        )
    if not complete:
        raise ApiError(400, "malformed_gzip", "The gzip body is truncated.")
    if inflater.unused_data:
        raise ApiError(400, "malformed_gzip", "Send one gzip member and nothing after it.")
    return body


def _form_decode(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The form data is not valid UTF-8.") from None
    except ValueError:
        raise ApiError(400, "malformed_form", "The form data could not be parsed.") from None
    return dict(pairs)


def json_decode(raw: bytes | str) -> Any:
    """The JSON document in `raw`, or a 400. orjson reads what it can (most bodies, several
    times faster); what it refuses goes to the standard library's parser, which decides as it
    always has: it accepts what orjson does not (NaN, integers past 64 bits, a lone surrogate
    escape, which validation then names), and its refusals are the errors below."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The body is not valid UTF-8.") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None


def write_data(
    method: str | None,
    meta: Mapping[str, Any],
    read_body: BodyReader,
    multipart: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one message of a /message/write/ request, from its query string, form or JSON body.

    `multipart` reads a multipart/form-data body (Django's parser: request.POST); a caller
    without one (the lean handler) hands such requests to Django before calling this."""
    if method == "GET":
        query = meta.get("QUERY_STRING", "")
        # WSGI hands the query string over as latin-1 decoded bytes; get the bytes back.
        return _form_decode(query.encode("latin-1"))
    kind = media_type(meta)
    if kind == MULTIPART_TYPE and multipart is None:
        raise RuntimeError("a multipart body needs Django's parser")
    raw = body_read(meta, read_body, cached_settings.MESSY_WRITE_MAX_BYTES)
    if _is_json(kind):
        data = json_decode(raw)
        if not isinstance(data, dict):
            raise ApiError(400, "malformed_json", "The body must be a JSON object.")
        return data
    if kind == FORM_TYPE:
        return _form_decode(raw)
    if kind == MULTIPART_TYPE and multipart is not None:
        # Django's multipart parser reads the raw body: it cannot be compressed.
        if meta.get("HTTP_CONTENT_ENCODING", "identity").strip().lower() != "identity":
            raise ApiError(415, "unsupported_content_encoding", "Send multipart form data uncompressed.")
        return multipart()
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Send {JSON_TYPES[0]}, {FORM_TYPE} or {MULTIPART_TYPE}.",
    )


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item of a batch: its data, or why it could not even be read."""

    data: Any
    parse_error: str | None = None


def _too_many_items() -> ApiError:
    return ApiError(413, "too_many_items", f"A batch holds at most {settings.MESSY_BATCH_MAX_ITEMS} messages.")


def batch_items(meta: Mapping[str, Any], read_body: BodyReader) -> list[BatchItem]:
    """Items of a /message/batch/ request: a JSON array, or NDJSON (one object a line).

    In NDJSON a line that is not JSON is one rejected item, not a failed request; blank lines
    are skipped. Either way the count is bounded (413 beyond), and counted while the body is
    read: no more than MESSY_BATCH_MAX_ITEMS + 1 items are ever built.
    """
    kind = media_type(meta)
    raw = body_read(meta, read_body, settings.MESSY_BATCH_MAX_BYTES)
    if not raw.strip():
        raise ApiError(400, "empty_batch", "The batch holds no messages.")
    limit = settings.MESSY_BATCH_MAX_ITEMS
    if _is_json(kind):
        data = _json_array_decode(raw, limit)
        if len(data) > limit:
            raise _too_many_items()
        items = [BatchItem(item) for item in data]
    elif kind in NDJSON_TYPES:
        items = []
        # Each match is a line holding something other than whitespace (from its first such
        # byte): blank lines cost the regex engine's scan, not a Python object each.
        for match in _NDJSON_LINE.finditer(raw):
            if len(items) == limit:
                raise _too_many_items()
            try:
                items.append(BatchItem(json.loads(match[0])))
            except UnicodeDecodeError:
                items.append(BatchItem(None, "The line is not valid UTF-8."))
            except (ValueError, RecursionError):
                items.append(BatchItem(None, "The line is not valid JSON."))
    else:
        raise ApiError(415, "unsupported_media_type", f"Send {JSON_TYPES[0]} (an array) or {NDJSON_TYPES[0]}.")
    if not items:
        raise ApiError(400, "empty_batch", "The batch holds no messages.")
    return items


_NDJSON_LINE = re.compile(rb"\S[^\n]*")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_scan_value = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # json.loads's own


def _json_array_decode(raw: bytes, limit: int) -> list[Any]:
    """The JSON array in `raw`, or its first limit + 1 elements when it holds more (the caller
    refuses it). A document cannot hold more values than it has separators and brackets, so one
    with few enough of them is read at once, by orjson (json_decode); any other is read an element
    at a time (the standard library's scanner), so a body of a million tiny elements never
    becomes a million objects."""
    separators = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if separators <= _SEPARATORS_PER_ITEM * limit:
        data = json_decode(raw)
        if not isinstance(data, list):
            raise _not_an_array()
        return data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The body is not valid UTF-8.") from None
    index = _JSON_SPACE.match(text, 1 if text.startswith("\ufeff") else 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", index):
        raise _not_an_array()
    items: list[Any] = []
    index = _JSON_SPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", index):
        return _json_end(text, index + 1, items)
    while len(items) <= limit:
        try:
            item, index = _scan_value(text, index)
        except (StopIteration, ValueError, RecursionError):
            raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
        items.append(item)
        index = _JSON_SPACE.match(text, index).end()  # type: ignore[union-attr]
        if text.startswith("]", index):
            return _json_end(text, index + 1, items)
        if not text.startswith(",", index):
            raise ApiError(400, "malformed_json", "The body is not valid JSON.")
        index = _JSON_SPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    return items


# A batch of messages has about five separators an item (four fields); room for commas in text.
_SEPARATORS_PER_ITEM = 16


def _json_end(text: str, index: int, items: list[Any]) -> list[Any]:
    if _JSON_SPACE.match(text, index).end() != len(text):  # type: ignore[union-attr]
        raise ApiError(400, "malformed_json", "The body is not valid JSON.")
    return items


def _not_an_array() -> ApiError:
    return ApiError(400, "malformed_json", "The body must be a JSON array of message objects.")


def idempotency_key_from(meta: Mapping[str, Any]) -> str:
    """The client's Idempotency-Key header, checked; "" when absent."""
    value = meta.get("HTTP_IDEMPOTENCY_KEY", "")
    if not value:
        return ""
    if len(value) > 255 or not value.isascii() or not value.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key must be at most 255 printable ASCII characters."
        )
    return value


def fingerprint(endpoint: str, verdicts: Sequence[MessageInput | None]) -> bytes:
    """A digest (SHA-256, 32 bytes) of what an Idempotency-Key retry must repeat to count as
    "the same request": the same endpoint, the same number of items, and the same accepted
    messages (their four fields as validated, so re-encoding or reordering JSON keys does not
    matter) in the same places. The content of rejected items and fields other than the four
    are ignored: nothing of them was staged, and a replay recomputes their verdicts anyway.

    Computed from the validated fields only (flat strings, encoded by orjson in C), never from
    the raw request, so an extra field nested a thousand levels deep costs nothing here.
    `verdicts`: one entry per item, its MessageInput or None when it was rejected."""
    return hashlib.sha256(endpoint.encode() + orjson.dumps(verdicts)).digest()
