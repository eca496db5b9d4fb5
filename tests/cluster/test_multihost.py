"""Messy on many hosts (issue 10, item 1): hosts built from network namespaces (tests/cluster/
netns.py), under load through the front door, lose every process of one worker host and later
of one web host. Nothing accepted is lost or stored twice, the rollups equal a recount, the
stats blob is still published every minute, and writes go on through the surviving web host.

The hosts: front (nginx, upstream web1 and web2), web1 and web2 (gunicorn), worker1..3 (Celery,
beat on worker1), redis (staging and broker), postgres, memcached1 and memcached2 (keys hashed
across both), s3 (SeaweedFS). The load comes from the root namespace, like clients from outside.

The front door retries a write on the other web host only when the first never received it
(`proxy_next_upstream error timeout`, no `non_idempotent`): a refused connection to the dead
host costs the client nothing, but a write that reached gunicorn may have been staged before
the host died, and sending it again would accept it twice. Those few (the writes in flight at
the kill) get `503 web_unavailable` with Retry-After, and the client retries with the same
Idempotency-Key, as client/messy_client.py does: the service answers the first acceptance if
there was one, so even they are stored once."""

import contextlib
import http.client
import itertools
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import boto3
import pytest
from botocore.config import Config

from tests.cluster.netns import Cluster, Host
from tests.harness import S3_LOCAL_ACCESS_KEY_ID, S3_LOCAL_SECRET_ACCESS_KEY, VENV_BIN
from tests.system.stack import KEY_PREFIX, Stack, assert_stored_exactly_once, message_body

pytestmark = [pytest.mark.system, pytest.mark.cluster]

WRITERS = 8
WRITES_PER_SECOND_PER_WRITER = 25
BATCH_EVERY = 20  # every 20th request is a batch
BATCH_SIZE = 50
RETRIES = 20
# Drains hand over to a fresh task (which any worker may take) every 3 s instead of 20, so the
# batches move between worker hosts often and a host holding one is found within seconds.
DRAIN_RUN_SECONDS = "3"


@dataclass
class Answer:
    at: float  # time.monotonic() of the answer
    status: int  # 0: the connection failed


@dataclass
class Writes:
    """What the writers saw: every answer (retries included), every accepted id once."""

    accepted: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    accepted_requests: list[float] = field(default_factory=list)  # when each request got its 202
    failed: list[tuple[int, object]] = field(default_factory=list)  # requests never answered 202
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(a.status for a in self.answers if since <= a.at < until)

    def accepted_between(self, since: float, until: float) -> int:
        return sum(since <= at < until for at in self.accepted_requests)


class Writers:
    """Threads writing through the front door at a steady pace until stopped. Every request
    carries an Idempotency-Key and is retried with it after a 429 or 503 (waiting Retry-After,
    at most half a second here) or a failed connection, up to RETRIES times."""

    def __init__(self, url_host: str, port: int) -> None:
        self.host, self.port = url_host, port
        self.writes = Writes()
        self.stopping = threading.Event()
        self.numbers = itertools.count()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WRITERS)]

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        interval = 1 / WRITES_PER_SECOND_PER_WRITER
        while not self.stopping.is_set():
            started = time.monotonic()
            n = next(self.numbers)
            body: object
            if n % BATCH_EVERY == 0:
                path, body = "/message/batch/", [message_body(n * BATCH_SIZE + j) for j in range(BATCH_SIZE)]
            else:
                path, body = "/message/write/", message_body(n)
            connection = self._write(connection, path, json.dumps(body), str(uuid.uuid4()))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        connection.close()

    def _write(
        self, connection: http.client.HTTPConnection, path: str, body: str, key: str
    ) -> http.client.HTTPConnection:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        for _ in range(RETRIES):
            retry_after = 0.2
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                status, answer = response.status, json.loads(response.read() or b"{}")
                retry_after = float(response.headers.get("Retry-After") or retry_after)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                status, answer = 0, None
            with self.writes.lock:
                self.writes.answers.append(Answer(time.monotonic(), status))
                if status == 202:
                    results = answer.get("results", [answer])
                    self.writes.accepted.extend(r["id"] for r in results if r["status"] == "accepted")
                    self.writes.accepted_requests.append(time.monotonic())
                    return connection
            if status not in (0, 429, 503):
                break
            time.sleep(min(retry_after, 0.5))
        with self.writes.lock:
            self.writes.failed.append((status, answer))
        return connection


class Publications:
    """Polls the stats blob in S3 every two seconds and keeps each distinct `generated_at`."""

    def __init__(self, cluster: Cluster) -> None:
        self.s3 = boto3.client(
            "s3",
            endpoint_url=cluster.config.s3_endpoint,
            aws_access_key_id=S3_LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=S3_LOCAL_SECRET_ACCESS_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )
        self.bucket = cluster.config.bucket
        self.seen: list[datetime] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Publications":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)

    def _run(self) -> None:
        while not self.stopping.wait(2):
            with contextlib.suppress(Exception):  # not published yet, or S3 busy: look again
                blob = json.loads(self.s3.get_object(Bucket=self.bucket, Key="stats/latest.json")["Body"].read())
                generated_at = datetime.fromisoformat(blob["generated_at"])
                if not self.seen or self.seen[-1] != generated_at:
                    self.seen.append(generated_at)

    def after(self, moment: datetime) -> list[datetime]:
        return [at for at in self.seen if at > moment]

    def wait_after(self, moment: datetime, count: int, timeout: float) -> list[datetime]:
        deadline = time.monotonic() + timeout
        while len(self.after(moment)) < count and time.monotonic() < deadline:
            time.sleep(1)
        return self.after(moment)


def batch_held(cluster: Cluster, host: Host) -> int:
    """Staged entries that the host's drains have read and not yet acknowledged, over every
    staging stream (a drain's consumer is `<host name>:<pid>`)."""
    staging, held = cluster.staging_redis(), 0
    for stream in staging.scan_iter(match=f"{KEY_PREFIX}:*", _type="stream"):
        with contextlib.suppress(Exception):  # a stream without the drains' group (dead letters)
            consumers = staging.xinfo_consumers(stream, "persisters")
            held += sum(c["pending"] for c in consumers if c["name"].decode().startswith(f"{host.hostname}:"))
    return held


def kill_one_holding_a_batch(cluster: Cluster, hosts: list[Host], timeout: float = 60) -> tuple[Host, int]:
    """kill -9 every process of the first of the worker hosts found holding a batch (the first
    host after `timeout`); returns that host and the entries its dead consumers held.

    Each host is frozen (SIGSTOP) while it is looked at: a drain holds a batch for only the
    milliseconds of its database write, and one seen holding it and killed a moment later
    had often acknowledged it in between. (A host killed while it publishes the minute's stats
    leaves a claim that lapses, and the beat's catch-up publishes that minute.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in hosts:
            host.freeze()
            if batch_held(cluster, host):
                assert cluster.kill_host(host) > 0
                return host, batch_held(cluster, host)
            host.thaw()
        time.sleep(0.01)
    assert cluster.kill_host(hosts[0]) > 0
    return hosts[0], batch_held(cluster, hosts[0])


def test_losing_a_worker_host_and_a_web_host_under_load_loses_and_duplicates_nothing(cluster: Cluster):
    web1, web2 = cluster.web_hosts
    worker1 = cluster.worker_hosts[0]
    cluster.env["MESSY_DRAIN_RUN_SECONDS"] = DRAIN_RUN_SECONDS
    for host in cluster.web_hosts:
        cluster.start_web(host)
    for host in cluster.worker_hosts:
        cluster.start_worker(host)
    cluster.start_beat(worker1)
    cluster.start_front()
    cluster.wait_workers_ready(cluster.worker_hosts)
    assert cluster.front_host is not None

    with Publications(cluster) as publications, Writers(cluster.front_host.address, 8000) as writers:
        time.sleep(10)
        # Not worker1: beat runs there, and one beat is what the cluster has.
        doomed_worker, held = kill_one_holding_a_batch(cluster, cluster.worker_hosts[1:])
        time.sleep(15)
        web_killed_at, web_killed_wall = time.monotonic(), datetime.now().astimezone()
        assert cluster.kill_host(web2) > 0
        # Two publications after both kills; each minute's is generated in its first seconds.
        after_kills = publications.wait_after(web_killed_wall, 2, timeout=150)
        writers_stopped_at = time.monotonic()
    writes = writers.writes
    summary = {
        "killed_worker_host": doomed_worker.name,
        "entries_it_held": held,
        "requests_accepted": len(writes.accepted_requests),
        "messages_accepted": len(writes.accepted),
        "answers": dict(writes.statuses()),
        "answers_after_web_kill": dict(writes.statuses(since=web_killed_at)),
        "publications": [at.isoformat() for at in publications.seen],
        "web_killed_at": web_killed_wall.isoformat(),
    }
    assert cluster.logs is not None
    (cluster.logs / "summary.json").write_text(json.dumps(summary, indent=2))

    assert held > 0, "the worker host held no batch when it was killed"
    assert not doomed_worker.pids() and not web2.pids()
    assert web1.pids() and worker1.pids()
    # Every request was accepted in the end; none needed more than the client's retries.
    assert writes.failed == [], writes.failed[:5]
    # Writes went on through web1: at least half the rate of the 15 s before the kill
    # (the load is paced; one web host serves it).
    before = writes.accepted_between(web_killed_at - 15, web_killed_at) / 15
    after_seconds = writers_stopped_at - (web_killed_at + 2)
    after = writes.accepted_between(web_killed_at + 2, writers_stopped_at) / after_seconds
    assert after >= 0.5 * before, (before, after)
    # The front door sent every new write to web1 itself: the client saw an error only for the
    # writes in flight on web2 when it died, at most one per writer.
    refused = writes.statuses(since=web_killed_at)
    assert refused[0] + refused[503] <= WRITERS, refused
    assert len(after_kills) >= 2, f"the stats blob was not published twice after the kills: {publications.seen}"
    # Published every minute from the first publication to the last: no minute left out.
    minutes = sorted({at.replace(second=0, microsecond=0) for at in publications.seen})
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(minutes)]
    assert all(gap == 60 for gap in gaps), publications.seen

    # Duck-typed: the check uses only the db() and staging_redis() that Cluster offers too.
    assert_stored_exactly_once(cast(Stack, cluster), writes.accepted)


def test_another_host_reaches_either_redis_only_over_tls_with_a_password(cluster: Cluster) -> None:
    """From a web host: both Redis servers refuse plain TCP, and over TLS a client without
    credentials or with a wrong password; the web tier's user may not reconfigure them."""
    ca = str(cluster.redis_tls.ca)
    host = cluster.redis_host.address
    probe = """
import sys, redis
host, ca, web_password = sys.argv[1:]
for port in (6380, 6381):
    outcomes = []
    for url in (f"redis://{host}:{port}/0", f"rediss://{host}:{port}/0", f"rediss://messy-web:wrong@{host}:{port}/0"):
        try:
            tls = {"ssl_ca_certs": ca} if url.startswith("rediss:") else {}
            redis.Redis.from_url(url, **tls, socket_timeout=2, socket_connect_timeout=2).ping()
            outcomes.append("answered")
        except redis.AuthenticationError:
            outcomes.append("auth")
        except redis.ConnectionError:
            outcomes.append("refused")
    web = redis.Redis.from_url(f"rediss://messy-web:{web_password}@{host}:{port}/0", ssl_ca_certs=ca)
    try:
        web.config_set("appendonly", "no")
        outcomes.append("reconfigured")
    except redis.exceptions.NoPermissionError:
        outcomes.append("denied")
    print(port, *outcomes)
"""
    web_password = cluster.env["REDIS_WEB_PASSWORD"]
    result = subprocess.run(
        cluster.web_hosts[0].command([str(VENV_BIN / "python"), "-c", probe, host, ca, web_password]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split("\n")[:2] == ["6380 refused auth auth denied", "6381 refused auth auth denied"], (
        result.stdout + result.stderr
    )
