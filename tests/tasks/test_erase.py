"""Erasure: every stored and staged message of a user goes, rollups stay exact, and nothing
is left that says who it was."""

import datetime
import json
import logging
import threading
import time
from urllib.parse import urlencode

import pytest
from django.core.cache import caches
from django.db import connection
from django.test import Client

from messages import copies, staging
from messages.copies import copy_key
from messages.models import Message
from messages.services import WriteRequest, messages_accept, messages_persist
from messages.staged import payload_decode
from messages.tasks import messages_copies_delete
from messages.validation import MessageInput
from project.redis import key
from stats.models import UserCount
from tasks import erasing, selectors, services
from tasks.models import Job
from tests.clock import StoppedClock
from tests.conftest import queued_messages, queued_tasks
from tests.harness import redis_admin
from tests.tasks.conftest import assert_rollups_exact, payload, staff_user, store

pytestmark = pytest.mark.django_db(transaction=True)

USER = "eve-the-erased"


def stage(username: str, count: int = 1) -> list[str]:
    inputs = [MessageInput(username, "Nice", "PAC", f"staged {i}") for i in range(count)]
    return messages_accept(WriteRequest(inputs)).ids


def stream_usernames(stream: str) -> list[str]:
    return [json.loads(fields[b"m"])["username"] for _, fields in staging.redis_client().xrange(stream)]


def erase(api: Client, username: str = USER) -> str:
    response = api.post("/tasks/erase/", {"username": username}, content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_an_erasure_removes_stored_staged_dead_lettered_and_cached_messages_and_keeps_rollups_exact(api, settings):
    settings.MESSY_ERASE_BATCH_SIZE = 10
    store([payload(USER, city=f"c{i % 4}", state=f"S{i % 3}") for i in range(35)])
    store([payload("bob", city="c1", state="S1") for _ in range(5)])
    staged_ids = stage(USER, 3) + stage("bob", 2)
    dead = json.dumps(payload(USER)).encode()
    staging.redis_client().xadd(staging.dead_letter_key(), {"m": dead, "reason": "test"})
    stored_copy = Message.objects.filter(username=USER).values_list("id", flat=True).first()
    caches["staged"].set(copy_key(str(stored_copy)), {"username": USER})

    job_id = erase(api)
    assert services.job_run(job_id) == "succeeded"

    job = Job.objects.get(pk=job_id)
    assert job.result == {"messages_erased": 35, "staged_erased": 3}
    assert (job.progress_done, job.progress_total) == (35, 35)
    assert not Message.objects.filter(username=USER).exists()
    assert Message.objects.filter(username="bob").count() == 5
    assert stream_usernames(staging.shards()[0].stream) == ["bob", "bob"]
    assert stream_usernames(staging.dead_letter_key()) == []
    cached = caches["staged"].get_many([copy_key(i) for i in staged_ids])
    assert cached.keys() == {copy_key(i) for i in staged_ids[3:]}
    assert caches["staged"].get(copy_key(str(stored_copy))) is None
    assert not UserCount.objects.filter(username=USER).exists()
    assert_rollups_exact()
    assert selectors.erasure_count() == 1


def test_an_erasure_ends_with_a_rewrite_of_the_staging_log_so_erased_entries_leave_the_disk(api, settings):
    stage(USER, 2)
    admin = redis_admin(settings.REDIS_URL)
    rewrites = int(admin.info("persistence")["aof_rewrites"])

    assert services.job_run(erase(api)) == "succeeded"

    assert (
        int(admin.info("persistence")["aof_rewrites"]) > rewrites
        or admin.info("persistence")["aof_rewrite_in_progress"]
    )


def test_a_message_a_drain_is_storing_while_the_job_runs_is_erased_too(api, settings):
    settings.MESSY_ERASE_PENDING_WAIT_SECONDS = 20
    stage(USER, 2)
    staging.group_ensure(staging.shards()[0])
    held = staging.batch_claim(staging.shards()[0], "drain-under-test", 100)  # read, not yet stored: pending
    assert len(held) == 2

    def drain_finishes_later() -> None:
        time.sleep(1)
        messages_persist([payload_decode(entry.payload) for entry in held])
        staging.batch_ack(staging.shards()[0], [entry.entry_id for entry in held], 2, 0)
        connection.close()

    drain = threading.Thread(target=drain_finishes_later)
    drain.start()
    job_id = erase(api)
    assert services.job_run(job_id) == "succeeded"
    drain.join()
    assert Message.objects.filter(username=USER).count() == 0
    assert_rollups_exact()


def test_a_message_that_arrives_while_the_job_runs_is_erased_too(api, settings):
    settings.MESSY_ERASE_BATCH_SIZE = 5
    store([payload(USER) for _ in range(12)])
    arrived: list[str] = []

    def on_progress(job: Job) -> None:
        if not arrived:
            arrived.extend(stage(USER))

    job_id = erase(api)
    assert services.job_run(job_id, on_progress=on_progress) == "succeeded"
    assert arrived and stream_usernames(staging.shards()[0].stream) == []
    assert Job.objects.get(pk=job_id).result == {"messages_erased": 12, "staged_erased": 1}


def test_nothing_identifies_the_erased_user_afterwards(api, caplog):
    caplog.set_level(logging.DEBUG)
    store([payload(USER) for _ in range(3)])
    job_id = erase(api)
    assert Job.objects.get(pk=job_id).subject == USER  # needed to resume until it finishes
    services.job_run(job_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(j)::text FROM tasks_job j WHERE id = %s", [job_id])
        (row,) = cursor.fetchone()
    assert USER not in row
    assert USER not in api.get(f"/tasks/jobs/{job_id}/").content.decode()
    assert USER not in api.get("/tasks/jobs/?kind=erase").content.decode()
    assert USER not in caplog.text
    assert api.get("/tasks/erase/").json() == {"erasures_performed": 1}


def test_a_failed_erasure_wipes_the_username_too(api, settings):
    settings.MESSY_ERASE_PENDING_WAIT_SECONDS = 0
    stage(USER)
    staging.group_ensure(staging.shards()[0])
    staging.batch_claim(staging.shards()[0], "a-drain-that-never-finishes", 10)
    job_id = erase(api)
    assert services.job_run(job_id) == "failed"
    job = Job.objects.get(pk=job_id)
    assert job.subject == "" and "still being stored" in job.error
    assert selectors.erasure_count() == 0


def test_erasures_are_rate_limited_by_a_counter_every_worker_shares(api, settings, monkeypatch):
    settings.MESSY_ERASE_RATE_PER_MINUTE = 1
    # Half a minute into a minute that stays: a real one could turn between the two erasures.
    minute_middle = (time.time() // 60) * 60 + 30
    monkeypatch.setattr(erasing, "time", StoppedClock(minute_middle))
    first, second = erase(api, "u1"), erase(api, "u2")
    assert services.job_run(first) == "succeeded"
    assert services.job_run(second) == "deferred"
    job = Job.objects.get(pk=second)
    assert (job.status, job.progress_message) == ("queued", "Waiting for the erasure rate limit.")
    keys = redis_admin(settings.REDIS_URL).keys(key("jobs", "erase-rate", "*"))  # KEYS: the admin's
    assert len(keys) == 1 and int(staging.redis_client().get(keys[0])) == 2


def test_a_resumed_erasure_does_not_wait_for_the_rate_limit(api, settings):
    settings.MESSY_ERASE_RATE_PER_MINUTE = 0
    job_id = erase(api)
    Job.objects.filter(pk=job_id).update(started_at="2026-01-01T00:00:00Z")  # it had started before
    assert services.job_run(job_id) == "succeeded"


@pytest.mark.parametrize("body", [{}, {"username": ""}, {"username": "a\x00b"}, {"username": "x" * 500}])
def test_an_erasure_needs_a_valid_username(api, body):
    response = api.post("/tasks/erase/", body, content_type="application/json")
    assert response.status_code == 400
    assert "username" in response.json()["fields"]


def test_a_backlog_larger_than_one_scan_page_is_searched_to_its_end(api, monkeypatch):
    monkeypatch.setattr(staging.erasure, "SCAN_COUNT", 3)
    for name in ("bob", USER, "bob", "bob", "cleo", USER, "bob", "dan", USER):
        stage(name)
    job_id = erase(api)
    assert services.job_run(job_id) == "succeeded"
    assert stream_usernames(staging.shards()[0].stream) == ["bob", "bob", "bob", "cleo", "bob", "dan"]
    assert Job.objects.get(pk=job_id).result == {"messages_erased": 0, "staged_erased": 3}


def test_a_finished_erasure_asks_for_a_forced_publish_so_the_user_leaves_the_blob_at_once(api, settings):
    """A forced publish skips the once-a-minute claim; the rebuilt top lists no longer name them."""
    store([payload(USER) for _ in range(3)])
    assert services.job_run(erase(api)) == "succeeded"
    assert queued_tasks("stats") == [("stats.publish", {"force": True})]


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "form"])
def test_a_staff_session_may_ask_for_an_erasure_with_a_form_body(multipart):
    """Regression (issue 9): the CSRF check reads request.POST first, after which reading the raw
    body raised RawPostDataException, a 500."""
    staff = staff_user("op", "erase")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    client.get("/admin/")  # sets the CSRF cookie, as the admin pages would
    form = {"username": USER, "csrfmiddlewaretoken": client.cookies["csrftoken"].value}
    if multipart:
        response = client.post("/tasks/erase/", form)  # the test client's default: multipart
    else:
        response = client.post("/tasks/erase/", urlencode(form), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).subject == USER


def test_copies_a_web_process_sends_after_the_erasure_are_deleted_again_once_it_must_have_sent_them(api):
    """A web server holds the memcached copies of what it staged for a moment (project.deferred),
    so one may land after the erasure deleted it. The erasure deletes the copies of the messages
    accepted within that moment's bound once more, when the bound has passed."""
    now_ms = time.time_ns() // 1_000_000
    old = payload(USER, accepted_at=now_ms - (copies.copies_late_seconds() + 60) * 1000)
    recent = payload(USER, accepted_at=now_ms)
    store([old, recent])
    staged_ids = stage(USER, 2)

    job_id = erase(api)
    assert services.job_run(job_id) == "succeeded"

    late = [t for t in queued_messages("ingest") if t["task"] == "messages.copies_delete"]
    assert sorted(i for t in late for i in t["args"][0]) == sorted([*staged_ids, recent["id"]])
    for task in late:
        eta = datetime.datetime.fromisoformat(task["eta"]).timestamp()
        assert eta >= now_ms / 1000 + copies.copies_late_seconds() - 1
    # The copies a web process sent after the erasure had deleted them:
    landed = [*staged_ids, recent["id"]]
    caches["staged"].set_many({copy_key(i): b"{}" for i in landed})
    for task in late:
        messages_copies_delete(*task["args"])
    assert caches["staged"].get_many([copy_key(i) for i in landed]) == {}
