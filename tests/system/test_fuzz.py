"""The API fuzzed through the front door: Schemathesis generates requests from
project/openapi.yaml (data that fits the document and data that does not) against live nginx,
gunicorn and a worker, and every answer must be documented: no 5xx, a documented status,
content type, headers and body. Then what the document cannot generate: the write paths without
their slash, NUL bytes in paths, bad and multi-member gzip bodies: no 5xx and no HTML answer.

One stack for the whole module (starting one per operation would cost more than the fuzzing);
a summary of what was sent goes to test-artifacts/system/fuzz/summary.json.
"""

import gzip
import json
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import harness
from tests.system.stack import KEY_PREFIX, Stack

pytestmark = pytest.mark.system

SCHEMA = schemathesis.openapi.from_path(str(harness.ROOT / "project" / "openapi.yaml"))
# NDJSON bodies are documented as strings (one JSON object a line): sent as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# Enough per operation to reach past the happy path (Schemathesis mixes valid and invalid
# data), few enough that the module stays near a minute on two cores.
EXAMPLES = int(os.environ.get("MESSY_FUZZ_EXAMPLES", "80"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@dataclass
class Target:
    url: str
    token: str
    stack: Stack
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))


@pytest.fixture(scope="module")
def fuzz(system_database, s3_server, artifacts_dir) -> Iterator[Target]:
    """Memcached, web, a worker for every queue (so writes are stored and jobs run) and the
    front door, on a clean database and Redis; a jobs API token, so the job endpoints are
    fuzzed past their authentication."""
    harness.tables_reset(harness.SYSTEM)
    harness.redis_reset(harness.SYSTEM)
    logs = artifacts_dir / "system" / "fuzz"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(logs=logs, s3_endpoint=s3_server)
    try:
        stack.start_memcached()
        stack.start_web()
        stack.worker("worker", role="all", concurrency=1)
        url = stack.start_front()
        token = stack.api_token("admin")
        target = Target(url=url, token=token, stack=stack)
        yield target
        documented = {
            f"{method.upper()} {path}"
            for path, item in SCHEMA.raw_schema["paths"].items()
            for method in item
            if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
        }
        summary = {
            "operations": len(documented),
            "examples_per_operation": EXAMPLES,
            "requests": sum(sum(counts.values()) for counts in target.statuses.values()),
            "requests_to_undocumented_methods": sum(
                sum(counts.values()) for op, counts in target.statuses.items() if op not in documented
            ),
            "server_errors": sum(n for counts in target.statuses.values() for s, n in counts.items() if s >= 500),
            "statuses": {op: dict(sorted(counts.items())) for op, counts in sorted(target.statuses.items())},
        }
        (logs / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        stack.stop_all()


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure here is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_fuzzed_request_gets_a_documented_answer_and_never_a_5xx(case, fuzz: Target) -> None:
    headers = {"Authorization": f"Bearer {fuzz.token}"} if case.path.startswith("/tasks/") else None
    response = case.call(base_url=fuzz.url, headers=headers, timeout=30, allow_redirects=False)
    fuzz.statuses[f"{case.method} {case.path}"][response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_a_get_write_with_a_maximal_message_in_its_query_is_answered_in_json(fuzz: Target) -> None:
    """Found by the fuzzer: gunicorn's own 4 KB request-line limit answered in HTML."""
    query = {"username": "ada", "city": "London", "state": "LDN", "message": "m" * 4096}
    response = requests.get(f"{fuzz.url}/message/write/", params=query, timeout=30)
    assert response.status_code in (202, 400, 414)
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]


def test_a_batch_never_replays_a_single_writes_answer(fuzz: Target) -> None:
    """Found by the fuzzer: one Idempotency-Key on a write and then on a batch of the same message."""
    message = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}
    key = {"Idempotency-Key": f"fuzz-{time.time_ns()}"}
    assert requests.post(f"{fuzz.url}/message/write/", json=message, headers=key, timeout=30).status_code == 202
    response = requests.post(f"{fuzz.url}/message/batch/", json=[message], headers=key, timeout=30)
    assert response.status_code in (202, 422)
    if response.status_code == 202:
        assert "results" in response.json(), response.text


def test_the_workers_stored_every_fuzzed_write(fuzz: Target) -> None:
    """After the fuzzing the staged backlog drains: accepted writes are stored, none is stuck."""
    accepted = sum(fuzz.statuses[op][202] for op in ("POST /message/write/", "GET /message/write/"))
    assert accepted > 0, "the fuzzer never got a message accepted"
    staging = fuzz.stack.staging_redis()
    deadline = time.monotonic() + 60
    while staging.xlen(f"{KEY_PREFIX}:{{s0}}:stream") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert staging.xlen(f"{KEY_PREFIX}:{{s0}}:stream") == 0
    with fuzz.stack.db() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM message")
        (stored,) = cursor.fetchone() or (0,)
    assert stored > 0


def test_an_import_name_with_a_nul_byte_is_refused_cleanly(fuzz: Target) -> None:
    """Found by the fuzzer: the name reached PostgreSQL's JSON, which refuses a NUL (a 500)."""
    response = requests.post(
        f"{fuzz.url}/tasks/import/?name=%00.ndjson",
        data=b"",
        headers={"Authorization": f"Bearer {fuzz.token}", "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert response.status_code == 400, response.text


MESSAGE = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}
_ONE = json.dumps(MESSAGE).encode()
_MANY = json.dumps([MESSAGE] * 3).encode()
GZIP_BODIES = {
    "gzip": lambda raw: gzip.compress(raw),
    "two members": lambda raw: gzip.compress(raw) + gzip.compress(raw),
    "garbage after": lambda raw: gzip.compress(raw) + b"\x00garbage",
    "corrupt": lambda raw: b"\x1f\x8b" + raw,
    "truncated": lambda raw: gzip.compress(raw)[:-6],
    "bomb": lambda raw: gzip.compress(raw[:-1] + b" " * 3_000_000 + raw[-1:]),
}


def _api_answer(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:200])
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[:200]


@pytest.mark.parametrize("path", ["/message/write/", "/message/write", "/message/batch/", "/message/batch"])
@pytest.mark.parametrize("encoding", list(GZIP_BODIES))
def test_gzip_bodies_good_and_bad_get_json_answers_on_either_path(fuzz: Target, path: str, encoding: str) -> None:
    raw = _MANY if "batch" in path else _ONE
    response = requests.post(
        fuzz.url + path,
        data=GZIP_BODIES[encoding](raw),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=30,
    )
    _api_answer(response)
    assert response.status_code == (202 if encoding == "gzip" else 413 if encoding == "bomb" else 400), response.text
    fuzz.statuses[f"POST {path} ({encoding})"][response.status_code] += 1


@pytest.mark.parametrize(
    "path",
    ["/message/%00", "/message/write/%00", "/message/write%00/", "/tasks/%00/", "/tasks/jobs/%00/", "/stat/get/%00"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_nul_bytes_in_paths_get_json_answers(fuzz: Target, path: str, method: str) -> None:
    response = requests.request(method, fuzz.url + path, data=_ONE, timeout=30, allow_redirects=False)
    _api_answer(response)


def test_a_raw_nul_byte_in_the_request_line_gets_a_json_answer(fuzz: Target) -> None:
    port = int(fuzz.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET /message/\x00/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"Content-Type: application/json" in answer, answer[:300]
