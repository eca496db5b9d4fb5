"""Messy under load, as its clients use it (`make loadtest`: headless, against `make run`'s front
door at http://127.0.0.1:8000; docs/operations.md, "Load test").

Each simulated client makes about LOADTEST_USER_RATE requests a second (default 10), in these
proportions:

- 75% single writes: POST /message/write/ as a form (curl, scripts);
- 5% batches of LOADTEST_BATCH_SIZE messages (default 100): POST /message/batch/ as JSON with
  an Idempotency-Key, as client/messy_client.py sends them;
- 15% status reads: GET /message/<id>/ of an id this client was given back;
- 5% the stats redirect: GET /stat/get/, not followed (the blob is S3's to serve, not Messy's).

Single writes are most of the requests, batches most of the messages. Anything but the
documented success is a failure, named by status and error code, so the summary says why
(`429 quota_exceeded`: the per-client quota; `429 rate_limited`: the front door's per-address
limit; `503 backlog_full`: backpressure). With MESSY_REQUIRE_WRITE_API_KEY=1, set
LOADTEST_API_KEY to one of MESSY_WRITE_API_KEYS.
"""

import collections
import json
import os
import random
import urllib.parse
import uuid
from typing import Any

from locust import FastHttpUser, constant_throughput, task

BATCH_SIZE = int(os.environ.get("LOADTEST_BATCH_SIZE", "100"))
USER_RATE = float(os.environ.get("LOADTEST_USER_RATE", "10"))
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
# Few enough users, cities and states that the rollups see the same rows often, as in life.
USERS = [f"user{i}" for i in range(2000)]
CITIES = [(f"city{i}", f"S{i % 50}") for i in range(500)]


def message() -> dict[str, str]:
    city, state = random.choice(CITIES)
    return {"username": random.choice(USERS), "city": city, "state": state, "message": f"load test {uuid.uuid4()}"}


def refusal(response: Any) -> str:
    """`<status> <error code>` of an answer that is not the one expected."""
    try:
        code = json.loads(response.content or b"{}").get("error", "")
    except ValueError:
        code = "not JSON"
    return f"{response.status_code} {code}".strip()


class MessyClient(FastHttpUser):
    wait_time = constant_throughput(USER_RATE)

    def on_start(self) -> None:
        self.headers = {"X-API-Key": API_KEY} if API_KEY else {}
        self.ids: collections.deque[str] = collections.deque(maxlen=100)

    @task(75)
    def write(self) -> None:
        headers = {**self.headers, "Content-Type": "application/x-www-form-urlencoded"}
        with self.client.post(
            "/message/write/", data=urllib.parse.urlencode(message()), headers=headers, catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(refusal(response))
                return
            self.ids.append(response.json()["id"])

    @task(5)
    def batch(self) -> None:
        headers = {**self.headers, "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
        body = json.dumps([message() for _ in range(BATCH_SIZE)])
        with self.client.post(
            "/message/batch/", data=body, headers=headers, name=f"/message/batch/ ({BATCH_SIZE})", catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(refusal(response))
                return
            answer = response.json()
            if answer["accepted"] != BATCH_SIZE:
                response.failure(f"{answer['rejected']} of {BATCH_SIZE} rejected")
            self.ids.extend(item["id"] for item in answer["results"][:5] if item["status"] == "accepted")

    @task(15)
    def status(self) -> None:
        if not self.ids:
            return
        with self.client.get(
            f"/message/{random.choice(self.ids)}/", headers=self.headers, name="/message/[id]/", catch_response=True
        ) as response:
            if response.status_code != 200 or response.json().get("status") not in ("pending", "stored"):
                response.failure(refusal(response))

    @task(5)
    def stats(self) -> None:
        # A dashboard follows the redirect to S3; the load test stops at Messy's answer.
        with self.client.get("/stat/get/", allow_redirects=False, catch_response=True) as response:
            if response.status_code != 302 or not response.headers.get("Location"):
                response.failure(refusal(response))
