"""A small client for Messy's write API. Standard library only: copy this file.

    from messy_client import MessyClient

    client = MessyClient("http://127.0.0.1:8000", api_key=None)
    accepted = client.write("ada", "London", "LDN", "hello")          # {"id": ..., "status": "accepted"}
    results = client.write_many({"username": "ada", ...} for _ in range(10_000))
    ids = [r["id"] for r in results if r["status"] == "accepted"]
    not_stored = client.wait_stored(ids, timeout=60)                   # [] once every one is stored

Every write carries an Idempotency-Key (one per batch), so a retry after a timeout, a 429 or a
503 is never accepted twice. Batches respect the server's item and byte limits and are split in
two on a 413. Retries are bounded in count and in total waiting time.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

__all__ = ["MessyClient", "MessyError"]

RETRYABLE_STATUSES = (429, 502, 503, 504)


class MessyError(Exception):
    """An answer the client cannot act on. `status` is 0 when no answer came at all."""

    def __init__(self, status: int, body: Any, message: str = "") -> None:
        self.status = status
        self.body = body
        self.error = body.get("error", "") if isinstance(body, dict) else ""
        super().__init__(message or f"HTTP {status}: {body}")


class MessyClient:
    """Writes and status reads against one Messy server.

    max_items and max_bytes match the server's MESSY_BATCH_MAX_ITEMS and MESSY_BATCH_MAX_BYTES
    defaults; a smaller server limit still works (the client splits on 413), just slower.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        max_items: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        max_retries: int = 6,
        max_wait: float = 120.0,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.backoff = backoff

    # --- writing ------------------------------------------------------------------------------

    def write(
        self, username: str, city: str, state: str, message: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Write one message; returns the 202 answer. Raises MessyError on a refusal."""
        body = json.dumps({"username": username, "city": city, "state": state, "message": message})
        status, answer = self._send("POST", "/message/write/", body.encode(), idempotency_key or str(uuid.uuid4()))
        if status != 202:
            raise MessyError(status, answer)
        return answer

    def write_many(self, messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Write many messages in batches; returns one result per message, in order:
        {"index", "status": "accepted", "id"} or {"index", "status": "rejected", "fields"}."""
        results: list[dict[str, Any]] = []
        for batch in self._batches(messages):
            results.extend(self._batch_send(batch))
        return results

    def _batches(self, messages: Iterable[Mapping[str, Any]]) -> Iterator[list[tuple[int, bytes]]]:
        batch: list[tuple[int, bytes]] = []
        size = 2  # the array's brackets
        for index, item in enumerate(messages):
            encoded = json.dumps(item, ensure_ascii=False).encode()
            if batch and (len(batch) >= self.max_items or size + 1 + len(encoded) > self.max_bytes):
                yield batch
                batch, size = [], 2
            batch.append((index, encoded))
            size += len(encoded) + (1 if len(batch) > 1 else 0)
        if batch:
            yield batch

    def _batch_send(self, batch: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
        body = b"[" + b",".join(encoded for _, encoded in batch) + b"]"
        status, answer = self._send("POST", "/message/batch/", body, str(uuid.uuid4()))
        if status == 413 and len(batch) > 1:
            half = len(batch) // 2
            return self._batch_send(batch[:half]) + self._batch_send(batch[half:])
        if status == 413:
            reason = answer.get("message", "Too large.") if isinstance(answer, dict) else "Too large."
            return [{"index": batch[0][0], "status": "rejected", "fields": {"__all__": [reason]}}]
        if status == 202 or (status == 400 and isinstance(answer, dict) and "results" in answer):
            # The server numbers items within the batch; give back positions in the input.
            return [{**result, "index": batch[result["index"]][0]} for result in answer["results"]]
        raise MessyError(status, answer)

    # --- reading ------------------------------------------------------------------------------

    def status(self, message_id: str) -> dict[str, Any] | None:
        """{"status": "pending" | "stored", ...}, or None when the server knows no such id."""
        status, answer = self._send("GET", f"/message/{message_id}/")
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

    # --- transport ----------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, body: bytes | None = None, idempotency_key: str | None = None
    ) -> tuple[int, Any]:
        """One request, retried on 429/5xx-unavailable (after Retry-After when given) and on
        network errors, within max_retries and max_wait. Only requests that are safe to repeat
        come here: reads, and writes carrying an Idempotency-Key."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            try:
                status, answer, retry_after = self._once(method, path, body, headers)
            except (URLError, OSError) as exc:  # refused, reset, timed out
                status, answer, retry_after = 0, {"error": "unreachable", "message": str(exc)}, None
            if status not in RETRYABLE_STATUSES and status != 0:
                return status, answer
            delay = retry_after if retry_after is not None else self.backoff * 2**attempt * (0.5 + random.random())
            if attempt == self.max_retries or waited + delay > self.max_wait:
                break
            time.sleep(delay)
            waited += delay
        raise MessyError(status, answer, f"gave up after {attempt + 1} attempts and {waited:.1f}s: HTTP {status}")

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, Any, float | None]:
        request = Request(self.base_url + path, data=body, headers=headers, method=method)  # noqa: S310
        try:
            with urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (the caller's URL)
                return response.status, _json(response.read()), None
        except HTTPError as error:
            with error:
                return error.code, _json(error.read()), _seconds(error.headers.get("Retry-After"))


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": "not_json", "message": raw[:200].decode("utf-8", "replace")}


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff
