"""MessyClient: writes, batches, status reads and jobs over one reused HTTP(S) connection.

Safe retries are the point of this module. Every message gets a UUIDv7 id before its first
attempt and every write request an Idempotency-Key, so a write is retried (on 429, 502-504 and
network errors, after Retry-After or with backoff) without ever being stored twice. Starting a
job is retried only when the server surely did not start it: a 429 or 503, or a connection that
could not be opened.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import os
import random
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from . import __version__
from .ids import uuid7

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Starting a job again after one of these cannot start it twice: the server refused it.
REFUSED_STATUSES = frozenset({429, 503})
FINISHED_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
IMPORT_TYPES = {".json": "application/json", ".ndjson": "application/x-ndjson", ".jsonl": "application/x-ndjson"}
IMPORT_TYPES[".csv"] = "text/csv"
UPLOAD_CHUNK = 64 * 1024

Progress = Callable[[int, int], None]
# The namespace of message ids derived from an Idempotency-Key (uuid5): fixed for good.
_KEY_IDS = uuid.UUID("6d657373-792d-4964-a56b-65792d696473")


class MessyError(Exception):
    """An answer the client cannot act on. `status` is 0 when no answer came at all; `error` is
    the server's stable error code ("backlog_full", "invalid_message", ...)."""

    def __init__(self, status: int, body: Any, message: str = "") -> None:
        self.status = status
        self.body = body
        self.error: str = body.get("error", "") if isinstance(body, dict) else ""
        super().__init__(message or f"HTTP {status}: {body}")


class _NotSent(OSError):
    """The connection could not be opened: the request surely did not reach the server."""


class MessyClient:
    """A client of one Messy server. Not thread-safe: one per thread (each holds a connection).

    `api_key` authenticates writes and status reads (X-API-Key), `token` the jobs API
    (Authorization: Bearer). max_items and max_bytes match the server's batch limits by default;
    a smaller server limit still works (a batch refused with 413 is split in two). Retries stop
    after max_retries attempts or max_wait seconds of waiting, whichever comes first.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        max_items: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        max_retries: int = 6,
        max_wait: float = 120.0,
        backoff: float = 0.5,
        gzip_min_bytes: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http:// or https:// with a host, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path
        self._ssl_context = ssl_context or (ssl.create_default_context() if self._https else None)
        self.api_key = api_key
        self.token = token
        self.timeout = timeout
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.backoff = backoff
        self.gzip_min_bytes = gzip_min_bytes
        self.user_agent = f"messy-client/{__version__}"
        self._connection: http.client.HTTPConnection | None = None
        self.connections_opened = 0
        self.retries = 0  # attempts sent again, for a caller's logs and metrics

    def __enter__(self) -> MessyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # --- writing ------------------------------------------------------------------------------

    def write(
        self,
        username: str,
        city: str,
        state: str,
        message: str,
        *,
        id: str | None = None,
        sent_at: str | int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Write one message; returns the 202 answer ({"id", "status": "accepted"}, with
        "client_id": the id this client minted or was given). Raises MessyError on a refusal.

        Without an `id`, the message gets a new UUIDv7, or, with an `idempotency_key`, an id
        derived from the key: writing the same message with the same key again (after a crash)
        is then answered with the first answer instead of being refused as another request."""
        item: dict[str, Any] = {"username": username, "city": city, "state": state, "message": message}
        item["id"] = id or (str(uuid.uuid5(_KEY_IDS, idempotency_key)) if idempotency_key else uuid7())
        if sent_at is not None:
            item["sent_at"] = sent_at
        body = json.dumps(item, ensure_ascii=False).encode()
        status, answer = self._send("POST", "/message/write/", body, idempotency_key or str(uuid.uuid4()))
        if status != 202:
            raise MessyError(status, answer)
        return {**answer, "client_id": item["id"]}

    def write_many(
        self, messages: Iterable[Mapping[str, Any]], *, on_batch: Callable[[int], None] | None = None
    ) -> list[dict[str, Any]]:
        """Write many messages in batches; returns one result per message, in input order:
        {"index", "status": "accepted", "id", "client_id"} or {"index", "status": "rejected",
        "fields", "client_id"}. A message without an "id" gets a UUIDv7 here. `on_batch` is
        called with the number of messages answered so far after each batch."""
        results: list[dict[str, Any]] = []
        for batch in self._batches(messages):
            results.extend(self._batch_send(batch))
            if on_batch is not None:
                on_batch(len(results))
        return results

    def _batches(self, messages: Iterable[Mapping[str, Any]]) -> Iterator[list[tuple[int, str, bytes]]]:
        batch: list[tuple[int, str, bytes]] = []
        size = 2  # the array's brackets
        for index, item in enumerate(messages):
            client_id = str(item.get("id") or uuid7())
            encoded = json.dumps({**item, "id": client_id}, ensure_ascii=False).encode()
            if batch and (len(batch) >= self.max_items or size + 1 + len(encoded) > self.max_bytes):
                yield batch
                batch, size = [], 2
            batch.append((index, client_id, encoded))
            size += len(encoded) + (1 if len(batch) > 1 else 0)
        if batch:
            yield batch

    def _batch_send(self, batch: list[tuple[int, str, bytes]]) -> list[dict[str, Any]]:
        body = b"[" + b",".join(encoded for _, _, encoded in batch) + b"]"
        status, answer = self._send("POST", "/message/batch/", body, str(uuid.uuid4()))
        if status == 413 and len(batch) > 1:
            half = len(batch) // 2
            return self._batch_send(batch[:half]) + self._batch_send(batch[half:])
        if status == 413:
            reason = answer.get("message", "Too large.") if isinstance(answer, dict) else "Too large."
            index, client_id, _ = batch[0]
            return [{"index": index, "status": "rejected", "fields": {"__all__": [reason]}, "client_id": client_id}]
        if status == 202 or (status == 400 and isinstance(answer, dict) and "results" in answer):
            # The server numbers items within the batch; give back positions in the input.
            return [
                {**result, "index": batch[result["index"]][0], "client_id": batch[result["index"]][1]}
                for result in answer["results"]
            ]
        raise MessyError(status, answer)

    # --- reading ------------------------------------------------------------------------------

    def status(self, message_id: str) -> dict[str, Any] | None:
        """{"status": "pending" | "stored", ...}, or None when the server knows no such id (the
        id the server answered with, not the client's own)."""
        status, answer = self._send("GET", f"/message/{quote(message_id)}/")
        if status == 404:
            return None
        if status != 200:
            raise MessyError(status, answer)
        return answer

    def wait_stored(self, ids: Iterable[str], timeout: float = 60.0, interval: float = 0.25) -> list[str]:
        """Poll until every id is stored or `timeout` passes; returns the ids not stored yet."""
        waiting = list(dict.fromkeys(ids))
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = [i for i in waiting if (self.status(i) or {}).get("status") != "stored"]
            if not waiting or time.monotonic() + interval > deadline:
                break
            time.sleep(interval)
        return waiting

    # --- jobs ---------------------------------------------------------------------------------

    def import_file(
        self, path: str | os.PathLike[str], *, file_format: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upload a JSON, NDJSON or CSV file and start an import job; returns the job. `progress`
        is called with (bytes sent, file size) as the upload goes. The format comes from the
        file's extension unless given ("json", "ndjson", "csv")."""
        name = os.path.basename(os.fspath(path))
        extension = os.path.splitext(name)[1].lower()
        content_type = IMPORT_TYPES.get(extension, "application/octet-stream")
        query = f"?name={quote(name)}" + (f"&format={quote(file_format)}" if file_format else "")
        size = os.path.getsize(path)

        def body() -> Iterator[bytes]:
            sent = 0
            if progress is not None:
                progress(0, size)
            with open(path, "rb") as file:
                while chunk := file.read(UPLOAD_CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, size)

        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        return self._job_start("/tasks/import/" + query, body, headers)

    def erase(self, username: str) -> dict[str, Any]:
        """Start erasing every message of `username`; returns the job."""
        body = json.dumps({"username": username}).encode()
        return self._job_start("/tasks/erase/", body, {"Content-Type": "application/json"})

    def job(self, job_id: str) -> dict[str, Any]:
        status, answer = self._send("GET", f"/tasks/jobs/{quote(job_id)}/", auth="token")
        if status != 200:
            raise MessyError(status, answer)
        return answer

    def job_cancel(self, job_id: str) -> dict[str, Any]:
        status, answer = self._send("POST", f"/tasks/jobs/{quote(job_id)}/cancel/", b"", auth="token")
        if status not in (200, 202):
            raise MessyError(status, answer)
        return answer

    def wait_job(
        self,
        job_id: str,
        timeout: float = 3600.0,
        interval: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it has finished (succeeded, failed or cancelled) and return it;
        TimeoutError after `timeout` seconds. `on_progress` gets the job at every poll."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in FINISHED_JOB_STATUSES:
                return job
            if time.monotonic() + interval > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout}s")
            time.sleep(interval)

    def _job_start(
        self, path: str, body: bytes | Callable[[], Iterator[bytes]], headers: dict[str, str]
    ) -> dict[str, Any]:
        status, answer = self._send("POST", path, body, headers=headers, auth="token", repeatable=False)
        if status != 202:
            raise MessyError(status, answer)
        return answer

    # --- transport ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterator[bytes]] | None = None,
        idempotency_key: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        auth: str = "api_key",
        repeatable: bool = True,
    ) -> tuple[int, Any]:
        """One request, retried within max_retries and max_wait. A `repeatable` request (a read,
        or a write carrying an Idempotency-Key and message ids) is retried on 429 and 502-504
        (after Retry-After when given) and on network errors; another only on 429 and 503 and
        when its connection could not be opened."""
        sent_headers = {"Accept": "application/json", "User-Agent": self.user_agent, **(headers or {})}
        if isinstance(body, bytes):
            sent_headers.setdefault("Content-Type", "application/json")
            if len(body) >= self.gzip_min_bytes:
                body = gzip.compress(body, compresslevel=1, mtime=0)  # most of level 6's gain, a third of its CPU
                sent_headers["Content-Encoding"] = "gzip"
        if idempotency_key:
            sent_headers["Idempotency-Key"] = idempotency_key
        if auth == "api_key" and self.api_key:
            sent_headers["X-API-Key"] = self.api_key
        if auth == "token" and self.token:
            sent_headers["Authorization"] = f"Bearer {self.token}"
        retry_statuses = RETRYABLE_STATUSES if repeatable else REFUSED_STATUSES
        waited = 0.0
        attempt = 0
        while True:
            try:
                status, answer, retry_after = self._once(method, path, body, sent_headers, fresh=not repeatable)
            except _NotSent as exc:
                status, answer, retry_after = 0, {"error": "unreachable", "message": str(exc)}, None
            except (OSError, http.client.HTTPException) as exc:  # reset, timed out, closed mid-answer
                if not repeatable:
                    raise MessyError(0, {"error": "no_answer", "message": str(exc)}) from exc
                status, answer, retry_after = 0, {"error": "no_answer", "message": str(exc)}, None
            if status != 0 and status not in retry_statuses:
                return status, answer
            delay = retry_after if retry_after is not None else min(30.0, self.backoff * 2**attempt)
            delay *= 1 if retry_after is not None else 0.5 + random.random()
            if attempt >= self.max_retries or waited + delay > self.max_wait:
                raise MessyError(
                    status, answer, f"gave up after {attempt + 1} attempts and {waited:.1f}s: HTTP {status} {answer}"
                )
            time.sleep(delay)
            waited += delay
            attempt += 1
            self.retries += 1

    def _open(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.connect()
        except ssl.SSLCertVerificationError as exc:
            connection.close()  # no retry can fix a certificate this client does not trust
            raise MessyError(0, {"error": "tls_verify_failed", "message": str(exc)}) from exc
        except OSError as exc:
            connection.close()
            raise _NotSent(str(exc)) from exc
        self.connections_opened += 1
        return connection

    def _once(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterator[bytes]] | None,
        headers: dict[str, str],
        fresh: bool = False,
    ) -> tuple[int, Any, float | None]:
        if fresh:
            self.close()  # never send a request that must not be repeated on a connection that may be stale
        connection = self._connection or self._open()
        self._connection = connection
        try:
            payload = body() if callable(body) else body
            connection.request(method, self._prefix + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, _json(raw), _seconds(response.headers.get("Retry-After"))


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": "not_json", "message": raw[:200].decode("utf-8", "replace")}


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
